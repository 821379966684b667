"""The two caches inside the service: L1 in Redis and L2 in the process.

L1 (``redis_cache``): cache-aside for lead lists and details, TTL 300 s. Keys embed a generation
number that every write bumps *after* it commits, so an entry computed from pre-write data can
never be read after the write (the classic cache-aside race), and no key scan is needed.

* **Single flight.** On a miss, one request per key recomputes: it takes a short Redis lock
  (``SET key:lock token NX PX``, redis-py's ``Lock``) while the others poll for the value it
  stores, briefly; a follower that waited in vain (a slow or dead leader) computes the value
  itself. So a hot key expiring under load costs the database one computation, not one per
  concurrent request (a cache stampede). The span says which role the request had.
* **Fail open.** If Redis fails, the lookup fails within the client's socket timeout, the request
  goes to the database and the span records the error (``lab.cache.error``). Redis known to be
  down (the shared-state poller says so) is not even tried. A write that could not bump the
  generation owes the bump and pays it as soon as Redis answers again.

L2 (``app_cache``): an in-process TTL cache (cachetools) for computed results such as
``/api/stats``. Entries are tagged with the shared L2 generation
(:mod:`latency_lab.core.shared_state`); a write bumps it in Redis and every process drops its
entries within the poll interval.

Every lookup is a span with the layer, the outcome and a hashed key (never the raw key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from cachetools import TTLCache
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.lock import Lock

from latency_lab.telemetry import vocabulary as v

log = logging.getLogger(__name__)

L1_GENERATION_KEY = "lab:l1:generation"
REDIS_UNAVAILABLE = "RedisUnavailable"  # lab.cache.error when Redis is known to be down


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class RedisCache:
    """L1: cache-aside in Redis for JSON documents, one recomputation per key at a time."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_s: int,
        tracer: trace.Tracer,
        available: Callable[[], bool] = lambda: True,
        lock_ttl_s: float = 5.0,
        wait_s: float = 2.0,
        poll_s: float = 0.01,
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._tracer = tracer
        self._available = available
        self._lock_ttl_s = lock_ttl_s
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._invalidation_owed = False

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        lock: Lock | None = None
        with self._tracer.start_as_current_span(v.cache_span_name(v.CacheLayer.REDIS)) as span:
            span.set_attribute(v.CACHE_LAYER, v.CacheLayer.REDIS.value)
            span.set_attribute(v.CACHE_KEY_HASH, key_hash(key))
            # The lookup's Redis commands are its implementation: the lookup span (outcome,
            # error, wait) is what people read, so the commands get no span of their own.
            with suppress_instrumentation():
                generation, cached = self._lookup_failing_open(key, span)
                if cached is None and generation is not None:
                    lock, cached = self._single_flight(f"{key}@{generation}", span)
            if cached is not None:
                span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.HIT.value)
                return json.loads(cached)
            span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.MISS.value)
        try:
            value = compute()
            if generation is not None:
                self._store(f"{key}@{generation}", value)
        finally:
            if lock is not None:
                self._release(lock)
        return value

    # --- lookup --------------------------------------------------------------------------------
    def _lookup_failing_open(
        self, key: str, span: trace.Span
    ) -> tuple[int | None, bytes | str | None]:
        if not self._available():
            span.set_attribute(v.CACHE_ERROR, REDIS_UNAVAILABLE)
            return None, None
        try:
            self._pay_owed_invalidation()
            generation = int(self._client.get(L1_GENERATION_KEY) or 0)
            return generation, self._client.get(f"{key}@{generation}")
        except redis.RedisError as exc:
            span.set_attribute(v.CACHE_ERROR, type(exc).__name__)
            return None, None

    def _single_flight(
        self, versioned_key: str, span: trace.Span
    ) -> tuple[Lock | None, bytes | str | None]:
        """Lead the recomputation (the lock), or follow: wait for the leader's value."""
        lock = self._client.lock(f"{versioned_key}:lock", timeout=self._lock_ttl_s)
        started = time.monotonic()
        try:
            if lock.acquire(blocking=False):
                span.set_attribute(v.CACHE_SINGLE_FLIGHT, v.SingleFlightRole.LEADER.value)
                return lock, None
            cached = self._await_leader(versioned_key, lock)
        except redis.RedisError as exc:
            span.set_attribute(v.CACHE_ERROR, type(exc).__name__)
            return None, None
        span.set_attribute(v.CACHE_WAIT_MS, round((time.monotonic() - started) * 1000, 3))
        role = v.SingleFlightRole.FOLLOWER if cached is not None else v.SingleFlightRole.FALLBACK
        span.set_attribute(v.CACHE_SINGLE_FLIGHT, role.value)
        return None, cached

    def _await_leader(self, versioned_key: str, lock: Lock) -> bytes | str | None:
        """The leader's value once stored; None if it did not come within ``wait_s``."""
        deadline = time.monotonic() + self._wait_s
        while time.monotonic() < deadline:
            time.sleep(self._poll_s)
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(lock.name)  # first: a leader stores its value before it unlocks
            pipe.get(versioned_key)
            held, cached = pipe.execute()
            if cached is not None:
                return cached
            if not held:  # the leader failed (no value) or its lock expired: stop waiting
                return None
        return None

    # --- store and invalidate ------------------------------------------------------------------
    def _store(self, versioned_key: str, value: Any) -> None:
        try:
            self._client.set(versioned_key, json.dumps(value), ex=self._ttl_s)
        except redis.RedisError as exc:
            log.warning("L1: could not store %s (%s)", key_hash(versioned_key), exc)

    @staticmethod
    def _release(lock: Lock) -> None:
        try:
            lock.release()
        except redis.RedisError as exc:  # expired meanwhile (LockNotOwnedError), or Redis down
            log.debug("L1: recompute lock not released (%s)", exc)

    def invalidate(self) -> None:
        """After a write commits: every older entry becomes unreachable (and expires by TTL).

        With Redis down the bump is owed, and paid before this process's next lookup.
        """
        self._invalidation_owed = True
        if not self._available():
            log.warning("L1: Redis unreachable; the invalidation is owed until it answers")
            return
        try:
            self._pay_owed_invalidation()
        except redis.RedisError as exc:
            log.warning("L1: could not invalidate (%s); owed until Redis answers", exc)

    def _pay_owed_invalidation(self) -> None:
        if self._invalidation_owed:
            self._client.incr(L1_GENERATION_KEY)
            self._invalidation_owed = False


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
