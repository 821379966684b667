"""Readiness probes: how the supervisor knows a child serves.

A probe is called with the child's PID and answers True once the child serves. Start-up waits
for it before starting the next tier; a restarted child counts as back only once it passes again;
and, for children whose probe can say so (:attr:`ProcessSpec.probe_while_running`), a probe that
keeps failing marks a running child ``not responding``. The ``repr`` of a probe says what is
being waited for, in error messages.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import redis

from latency_lab.lab.messages import redact_url
from latency_lab.lab.process_tree import descendants

Probe = Callable[[int], bool]
"""Readiness check for one child, given its PID: True once it serves."""


class HttpProbe:
    """Ready when ``GET url`` answers 200."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, pid: int) -> bool:
        try:
            # trust_env=False: a proxy from HTTP_PROXY must not stand between us and our children
            return httpx.get(self.url, timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def __repr__(self) -> str:
        return self.url


class RqWorkerProbe:
    """Ready when an RQ worker running as this child (or one of its descendants) has registered."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def __call__(self, pid: int) -> bool:
        from rq import Worker  # the CLI's other commands should not pay for importing rq

        pids = {pid} | {p.pid for p in descendants(pid)}
        try:
            with redis.Redis.from_url(self.redis_url, socket_timeout=1.0) as client:
                return any(worker.pid in pids for worker in Worker.all(connection=client))
        except redis.RedisError:
            return False

    def __repr__(self) -> str:
        return f"RQ worker registration in {redact_url(self.redis_url)}"


class RedisProbe:
    """Ready when the Redis server at ``url`` answers PING."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, pid: int) -> bool:
        try:
            with redis.Redis.from_url(self.url, socket_timeout=1.0) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def __repr__(self) -> str:
        return f"PING {redact_url(self.url)}"
