"""The edge: the lab's CDN stand-in, an HTTP cache in front of the lead service (its own process).

Entry point: ``gunicorn 'latency_lab.edge.app:create_edge_app()'``. Modules: ``app`` (factory,
routes, the request's configuration), ``cache``, ``forwarding``, ``relay``, ``telemetry``.
"""
