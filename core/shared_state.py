"""State every process shares through Redis: toggles, the world, and the L2 cache generation.

Reading must not cost a Redis round trip per request, so each process keeps a snapshot that a
daemon thread refreshes every ``POLL_INTERVAL_S`` (one ``MGET`` for all three keys). A change made
anywhere is therefore seen everywhere within that interval, well inside the 1 s promise.

If Redis is unreachable the last known snapshot is kept (fail open): toggles and world stay as
they were, and ``healthy`` turns false so ``/healthz`` can say so (and the caches and the
offload skip Redis instead of waiting for its timeout). A process built with
``restore_lost_state=True`` (the service) also writes its last known toggles and world back when
they vanish from Redis after it had read them: the lab's Redis keeps nothing on disk, and a
restarted one would otherwise bring every process back to the defaults.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TypeVar

import redis
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.backoff import NoBackoff
from redis.retry import Retry

from latency_lab.core.toggles import Toggles
from latency_lab.core.world import World

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
TOGGLES_KEY = "lab:toggles"
WORLD_KEY = "lab:world"
APP_CACHE_GENERATION_KEY = "lab:app_cache:generation"

_Doc = TypeVar("_Doc", Toggles, World)


@dataclass(frozen=True)
class Snapshot:
    toggles: Toggles = field(default_factory=Toggles)
    world: World = field(default_factory=World)
    app_cache_generation: int = 0


def connect_redis(
    redis_url: str | None, *, socket_timeout_s: float = 1.0, retries: int | None = None
) -> redis.Redis:
    """The lab's Redis, with a clear error when the process was started without one.

    ``retries`` (immediate, no backoff) replaces redis-py's default of 10 retries with
    exponential backoff, which would turn a dead Redis into seconds of waiting per command.
    """
    if not redis_url:
        raise RuntimeError(
            "REDIS_URL is not set: start the lab with `latency-lab up` (it starts Redis and "
            "passes REDIS_URL on), or point REDIS_URL at a running Redis"
        )
    options = {} if retries is None else {"retry": Retry(NoBackoff(), retries)}
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        **options,
    )


class SharedState:
    """A process's view of the shared state, refreshed in the background."""

    @classmethod
    def connect(cls, redis_url: str | None) -> SharedState:
        return cls(connect_redis(redis_url))

    def __init__(
        self,
        client: redis.Redis,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        restore_lost_state: bool = False,
    ) -> None:
        self._client = client
        self._poll_interval_s = poll_interval_s
        self._restore_lost_state = restore_lost_state
        self._read_from_redis: set[str] = set()
        self._snapshot = Snapshot()
        self._lock = threading.Lock()
        self._poller_pid: int | None = None
        self._stop = threading.Event()
        self.healthy = True
        self.refresh()

    # --- reads -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        self._ensure_poller()
        return self._snapshot

    @property
    def toggles(self) -> Toggles:
        return self.snapshot().toggles

    @property
    def world(self) -> World:
        return self.snapshot().world

    # --- writes ----------------------------------------------------------------------------
    def set_toggles(self, toggles: Toggles) -> Toggles:
        self._client.set(TOGGLES_KEY, toggles.model_dump_json())
        self.refresh()
        return toggles

    def set_world(self, world: World) -> World:
        self._client.set(WORLD_KEY, world.model_dump_json())
        self.refresh()
        return world

    def bump_app_cache_generation(self) -> int:
        """Invalidate every process's L2 cache: each sees the new generation on its next poll."""
        generation = int(self._client.incr(APP_CACHE_GENERATION_KEY))
        self.refresh()
        return generation

    # --- refresh ---------------------------------------------------------------------------
    def refresh(self) -> Snapshot:
        try:
            raw_toggles, raw_world, raw_generation = self._client.mget(
                TOGGLES_KEY, WORLD_KEY, APP_CACHE_GENERATION_KEY
            )
        except redis.RedisError as exc:
            if self.healthy:
                log.warning("shared state: Redis unreachable, keeping last known state (%s)", exc)
            self.healthy = False
            return self._snapshot
        self.healthy = True
        self._restore_if_lost(TOGGLES_KEY, raw_toggles, self._snapshot.toggles)
        self._restore_if_lost(WORLD_KEY, raw_world, self._snapshot.world)
        snapshot = Snapshot(
            toggles=self._parsed(Toggles, raw_toggles, self._snapshot.toggles, TOGGLES_KEY),
            world=self._parsed(World, raw_world, self._snapshot.world, WORLD_KEY),
            app_cache_generation=int(raw_generation or 0),
        )
        with self._lock:
            self._snapshot = snapshot
        return snapshot

    def _parsed(self, model: type[_Doc], raw: bytes | str | None, last: _Doc, key: str) -> _Doc:
        """The stored document; the last known one when it vanished and is being restored."""
        if raw is None and self._restore_lost_state and key in self._read_from_redis:
            return last
        return _parse(model, raw, last)

    def _restore_if_lost(self, key: str, raw: bytes | str | None, last: Toggles | World) -> None:
        if raw is not None:
            self._read_from_redis.add(key)
            return
        if not (self._restore_lost_state and key in self._read_from_redis):
            return
        try:
            # NX: when several processes restore at once, the first one wins and all agree.
            if self._client.set(key, last.model_dump_json(), nx=True):
                log.warning("shared state: %s vanished from Redis (restarted?); restored", key)
        except redis.RedisError as exc:
            log.warning("shared state: could not restore %s (%s)", key, exc)

    def _ensure_poller(self) -> None:
        # Started lazily, once per process: gunicorn and RQ fork after the app is built.
        if self._poller_pid == os.getpid():
            return
        with self._lock:
            if self._poller_pid == os.getpid():
                return
            self._poller_pid = os.getpid()
            thread = threading.Thread(target=self._poll, name="lab-shared-state", daemon=True)
            thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_interval_s):
            try:
                with suppress_instrumentation():  # background polling is no request's work
                    self.refresh()
            except Exception:  # the poller must outlive any one bad read (closed client, ...)
                log.exception("shared state: refresh failed; keeping last known state")

    def close(self) -> None:
        self._stop.set()


def _parse(model: type[_Doc], raw: bytes | str | None, fallback: _Doc) -> _Doc:
    if raw is None:
        return model()
    try:
        return model.model_validate_json(raw)
    except ValueError:
        log.warning("shared state: ignoring invalid %s document in Redis", model.__name__)
        return fallback
