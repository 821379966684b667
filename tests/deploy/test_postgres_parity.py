"""The same requests cost the same statements, and answer the same JSON, on SQLite and PostgreSQL.

Both databases are copies of one seed (tests.lab_fixtures' templates). The requests run once per
database through the real service app, each run on an emptied Redis (it is the session's own),
so caches start cold both times. The per-toggle tests in tests/service run on both databases
with fixed numbers; this one compares the two side by side, writes included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import World
from latency_lab.telemetry.accounting import parse_server_timing
from tests.lab_fixtures import FAST_WORLD, ThirdParty, make_lab

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    toggles: str = ""
    loader: str | None = None
    body: dict[str, Any] | None = None
    compare_body: bool = True
    statements: int | None = None  # the article's number, where the call pins one
    cache: dict[str, str] | None = None  # the cache outcomes it must report


LAZY, EAGER = "eager_loading=off", "eager_loading=on"
L1, L2 = f"{EAGER},redis_cache=on", "app_cache=on"
CALLS = (
    Call("GET", "/api/leads?limit=10", LAZY, statements=31),  # 1 + 3N
    Call("GET", "/api/leads?limit=10", EAGER, statements=1),  # json, the default
    Call("GET", "/api/leads?limit=10", EAGER, loader="joined", statements=1),
    Call("GET", "/api/leads?limit=10", EAGER, loader="selectin", statements=4),
    Call("GET", "/api/leads?limit=10", EAGER, loader="rows", statements=3),
    Call("GET", "/api/leads?limit=25&offset=40&status=new", LAZY),
    Call("GET", "/api/leads?limit=25&offset=40&status=new", EAGER, statements=1),
    Call("GET", "/api/leads/7", LAZY, statements=4),
    Call("GET", "/api/leads/7", EAGER),
    Call("GET", "/api/stats"),
    Call("GET", "/api/leads?limit=10", L1, cache={"redis": "miss"}),
    Call("GET", "/api/leads?limit=10", L1, statements=0, cache={"redis": "hit"}),
    Call("GET", "/api/leads/7", L1, cache={"redis": "miss"}),
    Call("GET", "/api/leads/7", L1, statements=0, cache={"redis": "hit"}),
    Call("GET", "/api/stats", L2, cache={"app": "miss"}),
    Call("GET", "/api/stats", L2, statements=0, cache={"app": "hit"}),
    Call("PATCH", "/api/leads/7", body={"status": "won"}),
    Call("GET", "/api/leads/7", L1, cache={"redis": "miss"}),  # the write invalidated L1
    Call(
        "POST",
        "/api/leads",
        body={
            "company": "Pied Piper",
            "contact_name": "Richard Hendricks",
            "email": "richard@piedpiper.example",
            "owner_id": 3,
            "tags": ["enterprise", "hot"],
            "metadata": {"source": "referral"},
        },
        compare_body=False,
    ),  # ids and timestamps are new
    Call("GET", "/api/stats", L2, cache={"app": "miss"}),  # the write invalidated L2
)


VOLATILE = {"updated_at"}  # when a write happened: differs between two runs by design


def _stable(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _stable(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [_stable(item) for item in body]
    return body


@dataclass(frozen=True)
class Outcome:
    status: int
    statements: int | None
    caches: dict[str, str]
    body: Any


def _run(
    database_url: str, redis_url: str, thirdparty: ThirdParty, tmp_path: Path
) -> list[Outcome]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()  # the session's own Redis: caches start cold for each database
    state = SharedState(client)
    state.set_world(World.from_json(FAST_WORLD))
    state.close()
    lab = make_lab(database_url, redis_url, thirdparty.url, tmp_path)
    outcomes = []
    try:
        for call in CALLS:
            headers = {"X-Lab-Toggles": call.toggles} if call.toggles else {}
            if call.loader:
                headers["X-Lab-Loader"] = call.loader
            response = lab.client.open(
                call.path, method=call.method, json=call.body, headers=headers
            )
            timing = parse_server_timing(response.headers["Server-Timing"])
            outcomes.append(
                Outcome(
                    response.status_code,
                    timing.statements,
                    dict(timing.cache),
                    _stable(response.json) if call.compare_body else None,
                )
            )
    finally:
        lab.close()
    return outcomes


def test_statement_counts_and_answers_are_identical_on_sqlite_and_postgresql(
    sqlite_url: str,
    postgres_database: str,
    lab_redis: str,
    thirdparty: ThirdParty,
    tmp_path: Path,
) -> None:
    on_sqlite = _run(sqlite_url, lab_redis, thirdparty, tmp_path / "sqlite")
    on_postgres = _run(postgres_database, lab_redis, thirdparty, tmp_path / "postgresql")

    for call, sqlite, postgres in zip(CALLS, on_sqlite, on_postgres, strict=True):
        where = f"{call.method} {call.path} [{call.toggles}]"
        assert sqlite.status == postgres.status and sqlite.status < 300, where
        assert sqlite.statements == postgres.statements, where
        assert sqlite.caches == postgres.caches, where
        assert sqlite.body == postgres.body, where
    for call, outcome in zip(CALLS, on_postgres, strict=True):
        where = f"{call.method} {call.path} [{call.toggles}]"
        if call.statements is not None:
            assert outcome.statements == call.statements, where
        if call.cache is not None:
            assert outcome.caches == call.cache, where
