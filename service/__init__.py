"""The Latency Lab lead service: the article's API with five switchable optimizations.

The application factory is :func:`latency_lab.service.app.create_app`; the other programs of
the lab (edge, simulator, workers) have packages of their own (see docs/architecture.md).
"""
