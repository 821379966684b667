"""State every process shares through Redis: toggles, the world, and the L2 cache generation.

Reading must not cost a Redis round trip per request, so each process keeps a snapshot that a
daemon thread refreshes every ``POLL_INTERVAL_S`` (one ``MGET`` for all three keys). A change made
anywhere is therefore seen everywhere within that interval, well inside the 1 s promise.

If Redis is unreachable the last known snapshot is kept (fail open): toggles and world stay as
they were, and ``healthy`` turns false so ``/healthz`` can say so.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TypeVar

import redis

from service.toggles import Toggles
from service.world import World

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


def connect_redis(redis_url: str | None, *, socket_timeout_s: float = 1.0) -> redis.Redis:
    """The lab's Redis, with a clear error when the process was started without one."""
    if not redis_url:
        raise RuntimeError(
            "REDIS_URL is not set: start the lab with `latency-lab up` (it starts Redis and "
            "passes REDIS_URL on), or point REDIS_URL at a running Redis"
        )
    return redis.Redis.from_url(
        redis_url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
    )


class SharedState:
    """A process's view of the shared state, refreshed in the background."""

    @classmethod
    def connect(cls, redis_url: str | None) -> SharedState:
        return cls(connect_redis(redis_url))

    def __init__(self, client: redis.Redis, *, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self._client = client
        self._poll_interval_s = poll_interval_s
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
        snapshot = Snapshot(
            toggles=_parse(Toggles, raw_toggles, self._snapshot.toggles),
            world=_parse(World, raw_world, self._snapshot.world),
            app_cache_generation=int(raw_generation or 0),
        )
        with self._lock:
            self._snapshot = snapshot
        return snapshot

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
