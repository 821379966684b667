"""Shared fixtures: a private Redis per test session, and clean Redis databases per test.

Tests never touch a Redis they did not start: the session's server listens on a free port on
127.0.0.1 and dies with the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from latency_lab.lab.redis_server import RedisServer

# For every test folder: PostgreSQL databases and schemas, and the lab's fixtures (seeded
# databases, simulator, service and worker processes).
pytest_plugins = ["tests.postgres", "tests.lab_fixtures", "pytester"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    workdir: Path = tmp_path_factory.mktemp("redis")
    server = RedisServer(workdir=workdir, log_file=workdir / "redis.log").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A Redis URL on the session's private server, emptied before each test (it is ours)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
