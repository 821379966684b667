"""The Latency Lab lead service: the article's API with five switchable optimizations.

The application factory is :func:`service.app.create_app`; the other processes of the lab (edge,
third-party simulator, RQ workers) have their own factories and entry points in this package.
"""
