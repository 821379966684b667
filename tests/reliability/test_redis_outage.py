"""Redis dies: reads fail open within the socket timeout, writes keep their side effects in the
outbox until Redis is back, and the toggles and world survive a restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq import Worker

from latency_lab.core.settings import Settings
from latency_lab.core.toggles import Toggles
from latency_lab.lab.redis_server import RedisServer
from latency_lab.lab.supervisor import ProcessSpec, RedisProbe, Supervisor
from latency_lab.telemetry import vocabulary as v
from tests.lab_fixtures import Lab, eventually, make_lab, process_env, trace_id_of
from tests.reliability.conftest import Stack, collect_calls

NEW_LEAD = {
    "company": "Vandelay Industries",
    "contact_name": "Art Vandelay",
    "email": "art@vandelay.example",
    "owner_id": 2,
}


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Lab]:
    """The lead service in this process (its spans in memory), on the stack's Redis."""
    lab = make_lab(stack.database_url, stack.redis_url, stack.thirdparty.url, tmp_path)
    yield lab
    lab.close()


def l1_span(lab: Lab, trace_id: str) -> dict[str, object]:
    spans = [
        s for s in lab.spans.get_finished_spans()
        if f"{s.context.trace_id:032x}" == trace_id
        and s.name == v.cache_span_name(v.CacheLayer.REDIS)
    ]  # fmt: skip
    assert len(spans) == 1, f"expected one L1 lookup, got {len(spans)}"
    return dict(spans[0].attributes or {})


def timed_get(lab: Lab, path: str, toggles: str) -> tuple[float, Any]:
    started = time.perf_counter()
    response = lab.get(path, toggles=toggles)
    return time.perf_counter() - started, response


def test_reads_fail_open_when_redis_is_killed(stack: Stack, service: Lab) -> None:
    toggles = "redis_cache=on,app_cache=on,async_offload=on"
    before = service.get("/api/leads/5", toggles=toggles)
    assert 'cache-redis;desc="miss"' in before.headers["Server-Timing"]

    stack.kill_redis()
    first_s, first = timed_get(service, "/api/leads/5", toggles)  # before the poller notices
    time.sleep(0.5)
    later_s, later = timed_get(service, "/api/leads/5", toggles)
    stats = service.get("/api/stats", toggles=toggles)
    health = service.get("/healthz")

    for response in (first, later):
        assert response.status_code == 200
        assert response.json == before.json
        assert 'cache-redis;desc="miss"' in response.headers["Server-Timing"]
    assert first_s < 2.0, f"first read after the kill took {first_s:.2f} s"
    assert later_s < 1.0, f"reads once Redis is known down took {later_s:.2f} s"
    assert l1_span(service, trace_id_of(first))[v.CACHE_ERROR] == "ConnectionError"
    assert l1_span(service, trace_id_of(later))[v.CACHE_ERROR] == "RedisUnavailable"
    assert stats.status_code == 200 and stats.json["total"] == 120
    assert health.json["redis"].startswith("unreachable")

    stack.start_redis()
    assert eventually(lambda: service.get("/healthz").json["redis"] == "ok", timeout_s=5)
    service.get("/api/leads/5", toggles=toggles)
    again = service.get("/api/leads/5", toggles=toggles)
    assert 'cache-redis;desc="hit"' in again.headers["Server-Timing"]


def redis_commands(lab: Lab, trace_id: str) -> list[str]:
    """The Redis commands a request sent (its Redis client spans), in order."""
    return [
        s.name for s in lab.spans.get_finished_spans()
        if f"{s.context.trace_id:032x}" == trace_id
        and v.first_attribute(s.attributes, v.DB_SYSTEM_KEYS) == "redis"
    ]  # fmt: skip


def test_a_hung_redis_costs_a_read_one_lookup_then_nothing(stack: Stack, service: Lab) -> None:
    """A Redis that accepts connections and never answers (SIGSTOP) must not hang reads.

    Counted, not timed: the first read's L1 lookup times out (0.25 s, one immediate retry) and
    the read still answers 200 from the database without trying to store; once the shared-state
    poller has seen Redis fail, reads do not try Redis at all (``RedisUnavailable``: the lookup
    was skipped, and no Redis command span appears). The one wall-clock bound is loose
    on purpose (a busy CI machine adds scheduling delay): it separates "paid a socket timeout"
    from "hung on Redis", which is what a user would notice.
    """
    toggles = "redis_cache=on"
    service.get("/api/leads?limit=10", toggles=toggles)
    assert stack.redis_server.process is not None
    os.kill(stack.redis_server.process.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        first_s, first = timed_get(service, "/api/leads?limit=10", toggles)
        time.sleep(0.8)  # the shared-state poller has timed out too by now
        after = [service.get("/api/leads?limit=10", toggles=toggles) for _ in range(5)]
    finally:
        os.kill(stack.redis_server.process.pid, signal.SIGCONT)

    assert first.status_code == 200
    assert first_s < 2.0, f"a read against a hung Redis took {first_s:.2f} s"
    assert l1_span(service, trace_id_of(first))[v.CACHE_ERROR] == "TimeoutError"
    assert redis_commands(service, trace_id_of(first)) == []  # no store after a failed lookup
    for response in after:
        assert response.status_code == 200
        assert response.json == first.json
        assert l1_span(service, trace_id_of(response))[v.CACHE_ERROR] == "RedisUnavailable"
        assert redis_commands(service, trace_id_of(response)) == []


def test_writes_keep_their_side_effects_in_the_outbox_until_redis_is_back(
    stack: Stack, service: Lab
) -> None:
    stack.start_worker()
    stack.start_relay()
    stack.kill_redis()
    time.sleep(0.3)

    created = [
        service.client.post(
            "/api/leads",
            json={**NEW_LEAD, "email": f"art{n}@vandelay.example", "company": f"Vandelay {n}"},
            headers={"X-Lab-Toggles": "async_offload=on,redis_cache=on"},
        )
        for n in range(5)
    ]
    assert [r.status_code for r in created] == [201] * 5
    states = {s["state"] for r in created for s in r.json["side_effects"].values()}
    assert states == {"pending"}
    assert "when Redis is back" in created[0].json["side_effects"]["send_owner_email"]["detail"]
    assert stack.outbox_counts()["pending"] == 15
    assert service.get("/api/leads?limit=5", toggles="redis_cache=on").status_code == 200

    stack.start_redis()
    delivered = eventually(lambda: stack.outbox_counts()["delivered"] == 15, timeout_s=45)
    assert delivered, f"outbox {stack.outbox_counts()}\n{stack.log('relay')}\n{stack.log('worker')}"
    lead_ids = {r.json["id"] for r in created}
    assert delivered_once_each(collect_calls(stack.thirdparty), lead_ids)


def test_toggles_and_world_survive_a_redis_restart(stack: Stack) -> None:
    stack.set_world(db_round_trip_ms=0.25)
    url = stack.start_service()
    chosen = {"eager_loading": True, "redis_cache": True, "async_offload": True}
    assert httpx.put(f"{url}/admin/toggles", json=chosen).status_code == 200

    stack.kill_redis()
    during = httpx.get(f"{url}/healthz").json()
    stack.start_redis()  # empty: the lab's Redis keeps nothing on disk
    time.sleep(1.0)
    toggles = httpx.get(f"{url}/admin/toggles").json()["toggles"]
    world = httpx.get(f"{url}/admin/world").json()

    assert during["toggles"] == Toggles(**chosen).model_dump()  # last known state, kept
    assert toggles == Toggles(**chosen).model_dump()  # written back into the new Redis
    assert world["db_round_trip_ms"] == 0.25


def delivered_once_each(calls: dict[str, Any], lead_ids: set[int]) -> bool:
    """Every lead's email, lead.created event and enrichment delivered exactly once."""
    delivered: dict[tuple[str, Any], int] = {}
    for call in calls["calls"]:
        if call["outcome"] != "delivered":
            continue
        body = call["body"]
        lead_id = body.get("lead_id") or (body.get("properties") or {}).get("lead_id")
        if call["provider"] == "analytics" and body.get("event") != "lead.created":
            continue
        key = (call["provider"], lead_id)
        delivered[key] = delivered.get(key, 0) + 1
    wanted = {(p, lead) for p in ("email", "analytics", "enrichment") for lead in lead_ids}
    counts = {key: delivered.get(key, 0) for key in wanted}
    assert all(count == 1 for count in counts.values()), {k: c for k, c in counts.items() if c != 1}
    return True


def test_latency_lab_up_starts_its_own_redis_again_when_it_dies(tmp_path: Path) -> None:
    """The supervisor of ``latency-lab up`` brings its private Redis back, on the same port
    (tests/reliability/test_supervisor.py does it to a whole running lab)."""
    warnings: list[str] = []
    server = RedisServer(workdir=tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    supervisor = Supervisor(tmp_path / "log", process_env(), warn=warnings.append)
    spec = ProcessSpec("redis", tuple(server.command()), probe=RedisProbe(server.url))
    process = supervisor.spawn(spec)
    try:
        supervisor.wait_ready([process], timeout_s=10)
        first = process.pid
        os.kill(first, signal.SIGKILL)

        def back() -> bool:
            supervisor.tend()
            return process.state == "up" and process.pid != first and _pings(server.port)

        assert eventually(back, timeout_s=10, interval_s=0.1), warnings
    finally:
        supervisor.stop(grace_s=2)

    assert f"redis (pid {first}) was killed by SIGKILL; starting it again" in warnings[0]
    assert process.restarts == 1


def _pings(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=0.2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def test_the_worker_is_seen_again_after_a_redis_restart(stack: Stack) -> None:
    """A restart loses every key, the workers' records with them: each slot registers again,
    so the Background jobs page lists them and their jobs can be told from abandoned ones."""
    worker = stack.start_worker()

    def slots() -> int:
        with redis.Redis.from_url(stack.redis_url) as client:
            return sum(1 for w in Worker.all(connection=client) if w.pid == worker.pid)

    concurrency = int(stack.env().get("LAB_RQ_CONCURRENCY") or Settings().rq_concurrency)
    assert eventually(lambda: slots() == concurrency, timeout_s=30), f"{slots()} slots"
    stack.kill_redis()
    stack.start_redis()

    back = eventually(lambda: slots() == concurrency, timeout_s=30)
    assert back, f"{slots()} of {concurrency} slots registered again"
