"""The edge's HTTP cache: where entries live, what they are keyed by, and the clock they age by.

The caching semantics are hishel's (2.x, ``CacheTransport`` in RFC mode with
``CacheOptions(shared=True)``), not ours: this module holds only what hishel leaves to us. The
entries live in hishel's SQLite storage on an in-memory database (:class:`EdgeCache`): the edge is
one process (gthread workers share it), entries are rebuilt in a second after a restart, and
nothing stale survives a restart to confuse a run. :func:`cache_key` makes the request's
configuration part of the key; :class:`DateStampingTransport` gives every response the ``Date``
its freshness is computed from.
"""

from __future__ import annotations

import hashlib
import sqlite3
from email.utils import formatdate

import httpx
from hishel import SqliteStorage

from latency_lab.core.toggles import TOGGLE_HEADER, Toggles

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
CACHE_MAX_BYTES = 64 * 1024 * 1024
# Storage lifetime of an entry; freshness is the response's own Cache-Control. Stale entries are
# kept this long so that their ETag can still be revalidated.
CACHE_ENTRY_TTL_S = 600.0


class EdgeCache:
    """The edge's hishel storage: SQLite in memory. Purging swaps in an empty one."""

    def __init__(self) -> None:
        self._storage = self._empty_storage()

    @staticmethod
    def _empty_storage() -> SqliteStorage:
        # Readers still streaming from a purged storage keep it alive until they finish.
        connection = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        return SqliteStorage(
            connection=connection, default_ttl=CACHE_ENTRY_TTL_S, max_size=CACHE_MAX_BYTES
        )

    @property
    def storage(self) -> SqliteStorage:
        return self._storage

    def purge(self) -> None:
        self._storage = self._empty_storage()  # one assignment: atomic for concurrent readers


def cache_key(url: str, toggles: Toggles) -> str:
    """The entry key: the URL and the configuration that produced the response."""
    return hashlib.sha256(f"RFC {url}\n{TOGGLE_HEADER}: {toggles.label()}".encode()).hexdigest()


class DateStampingTransport(httpx.BaseTransport):
    """Adds ``Date`` to responses that lack one (RFC 9110 section 6.6.1: a recipient with a
    clock must, before caching or forwarding). Freshness is computed from it: without it, an
    entry would never age."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if "date" not in response.headers:
            response.headers["Date"] = formatdate(usegmt=True)
        return response

    def close(self) -> None:
        self._inner.close()
