"""``latency-lab bench``: the article's table reproduced side by side in one run, and the lab's
own costs (telemetry overhead, trace-store ingest, dashboard queries, memory).

Run it with ``latency-lab bench``; ``--quick`` is a smoke run.
"""
