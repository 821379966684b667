"""Latency Lab: an API taken from 500 ms to 50 ms, live, with every optimization switchable.

The import root. Each program of the lab lives in a top-level folder of the repository
(``service/``, ``edge/``, ``simulator/``, ``worker/``, ``lab/``, ``cli/``, ``dashboard/``, ...);
this package links them under one distinctive name, so ``pip install latency-lab`` adds a single
top-level module to an environment and never shadows (or is shadowed by) a project's own
``telemetry`` or ``service`` package. ``docs/architecture.md`` draws the packages and the one
direction their imports flow in.
"""
