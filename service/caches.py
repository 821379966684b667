"""The two caches inside the service: L1 in Redis and L2 in the process.

L1 (``redis_cache``): cache-aside for lead lists and details, TTL 300 s. Keys embed a generation
number that every write bumps *after* it commits, so an entry computed from pre-write data can
never be read after the write (the classic cache-aside race), and no key scan is needed.
If Redis fails, the lookup fails open within the socket timeout: the request goes to the
database and the span records the error.

L2 (``app_cache``): an in-process TTL cache (cachetools) for computed results such as
``/api/stats``. Entries are tagged with the shared L2 generation (:mod:`service.shared_state`);
a write bumps it in Redis and every process drops its entries within the poll interval.

Every lookup is a span with the layer, the outcome and a hashed key (never the raw key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from cachetools import TTLCache
from opentelemetry import trace

from telemetry import vocabulary as v

log = logging.getLogger(__name__)

L1_GENERATION_KEY = "lab:l1:generation"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class RedisCache:
    """L1: cache-aside in Redis for JSON documents."""

    def __init__(self, client: redis.Redis, *, ttl_s: int, tracer: trace.Tracer) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._tracer = tracer

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._tracer.start_as_current_span(v.cache_span_name(v.CacheLayer.REDIS)) as span:
            span.set_attribute(v.CACHE_LAYER, v.CacheLayer.REDIS.value)
            span.set_attribute(v.CACHE_KEY_HASH, key_hash(key))
            try:
                generation, cached = self._lookup(key)
            except redis.RedisError as exc:
                span.set_attribute(v.CACHE_ERROR, type(exc).__name__)
                span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.MISS.value)
                generation, cached = None, None
            if cached is not None:
                span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.HIT.value)
                return json.loads(cached)
            span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.MISS.value)
        value = compute()
        if generation is not None:
            self._store(f"{key}@{generation}", value)
        return value

    def _lookup(self, key: str) -> tuple[int, bytes | str | None]:
        generation = int(self._client.get(L1_GENERATION_KEY) or 0)
        return generation, self._client.get(f"{key}@{generation}")

    def _store(self, versioned_key: str, value: Any) -> None:
        try:
            self._client.set(versioned_key, json.dumps(value), ex=self._ttl_s)
        except redis.RedisError as exc:
            log.warning("L1: could not store %s (%s)", key_hash(versioned_key), exc)

    def invalidate(self) -> None:
        """After a write commits: every older entry becomes unreachable (and expires by TTL)."""
        try:
            self._client.incr(L1_GENERATION_KEY)
        except redis.RedisError as exc:
            log.warning("L1: could not invalidate (%s); entries expire within the TTL", exc)


class AppCache:
    """L2: computed results in this process, dropped when the shared generation moves."""

    def __init__(
        self, *, ttl_s: int, generation: Callable[[], int], tracer: trace.Tracer, maxsize: int = 256
    ) -> None:
        self._entries: TTLCache[str, tuple[int, Any]] = TTLCache(maxsize=maxsize, ttl=ttl_s)
        self._generation = generation
        self._tracer = tracer
        self._lock = threading.Lock()

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._tracer.start_as_current_span(v.cache_span_name(v.CacheLayer.APP)) as span:
            span.set_attribute(v.CACHE_LAYER, v.CacheLayer.APP.value)
            span.set_attribute(v.CACHE_KEY_HASH, key_hash(key))
            generation = self._generation()
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and entry[0] == generation:
                span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.HIT.value)
                return entry[1]
            span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.MISS.value)
        value = compute()
        with self._lock:
            self._entries[key] = (generation, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
