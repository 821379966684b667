"""The third-party simulator: email, analytics and enrichment providers as a real HTTP service.

Entry point: ``gunicorn 'latency_lab.simulator.app:create_thirdparty_app()'``. It records every
call it receives, so tests and the dashboard can count deliveries.
"""
