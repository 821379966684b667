"""Running the lab on one machine: the supervisor behind ``latency-lab up``, the lab's own Redis,
what a running lab says about itself (``var/lab.json``) and the load generator.

It starts the programs as processes by their entry points and never imports them.
"""
