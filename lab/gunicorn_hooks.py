"""Gunicorn server hooks for a preloaded app (``--preload --config python:<this module>``).

With ``--preload`` the master builds the app and forks its workers: they share the master's
memory pages until one of them writes to a page. CPython's cyclic garbage collector writes to
every object it visits (its GC header), so left alone it would copy the shared pages into each
worker on its first full collection. ``gc.freeze()`` before each fork moves everything the master
built into a permanent generation that the collector never visits (the CPython documentation's
advice for ``fork()`` without ``exec()``), so the pages stay shared.
"""

from __future__ import annotations

import gc
from typing import Any


def pre_fork(_server: Any, _worker: Any) -> None:
    gc.freeze()
