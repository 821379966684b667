"""L1 (Redis) and L2 (in-process) caches: hits, and no stale read after a write."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.testing import assert_queries
from tests.lab_fixtures import (
    Lab,
    ServiceProcess,
    ThirdParty,
    eventually,
    make_lab,
    trace_id_of,
)

NEW_LEAD = {
    "company": "Initech",
    "contact_name": "Peter Gibbons",
    "email": "peter@initech.example",
    "owner_id": 3,
    "tags": ["hot"],
}


def test_l1_second_read_is_a_redis_hit_with_no_statements(lab: Lab) -> None:
    first = lab.get("/api/leads?limit=20", toggles="redis_cache=on")
    with assert_queries(0):
        second = lab.get("/api/leads?limit=20", toggles="redis_cache=on")

    assert 'cache-redis;desc="miss"' in first.headers["Server-Timing"]
    assert 'cache-redis;desc="hit"' in second.headers["Server-Timing"]
    assert second.json == first.json


def test_l1_off_never_consults_redis(lab: Lab) -> None:
    lab.get("/api/leads/5", toggles="redis_cache=off")
    with assert_queries(4):  # lead + owner + tags + metadata
        response = lab.get("/api/leads/5", toggles="redis_cache=off")

    assert "cache-redis" not in response.headers["Server-Timing"]


def test_l1_read_after_write_is_never_stale(lab: Lab) -> None:
    before = lab.get("/api/leads/7", toggles="redis_cache=on").json
    lab.get("/api/leads/7", toggles="redis_cache=on")  # now cached
    new_status = "won" if before["status"] != "won" else "lost"

    patched = lab.client.patch("/api/leads/7", json={"status": new_status})
    after = lab.get("/api/leads/7", toggles="redis_cache=on")

    assert patched.status_code == 200
    assert after.json["status"] == new_status
    assert 'cache-redis;desc="miss"' in after.headers["Server-Timing"]


def test_l1_list_sees_a_created_lead(lab: Lab) -> None:
    total = lab.get("/api/leads?limit=1", toggles="redis_cache=on").json["total"]

    assert lab.client.post("/api/leads", json=NEW_LEAD).status_code == 201

    assert lab.get("/api/leads?limit=1", toggles="redis_cache=on").json["total"] == total + 1


def test_l2_second_stats_read_is_an_app_hit(lab: Lab) -> None:
    first = lab.get("/api/stats", toggles="app_cache=on")
    with assert_queries(0):
        second = lab.get("/api/stats", toggles="app_cache=on")

    assert 'cache-app;desc="miss"' in first.headers["Server-Timing"]
    assert 'cache-app;desc="hit"' in second.headers["Server-Timing"]
    assert second.json == first.json
    assert sum(first.json["by_status"].values()) == first.json["total"]


def test_l2_is_invalidated_by_a_write_in_the_same_process(lab: Lab) -> None:
    total = lab.get("/api/stats", toggles="app_cache=on").json["total"]

    lab.client.post("/api/leads", json=NEW_LEAD)

    assert lab.get("/api/stats", toggles="app_cache=on").json["total"] == total + 1


def test_l2_is_invalidated_in_another_process_within_a_second(
    service_process: ServiceProcess,
    database_url: str,
    lab_redis: str,
    thirdparty: ThirdParty,
    tmp_path: Path,
) -> None:
    headers = {"X-Lab-Toggles": "app_cache=on"}
    other = service_process.url
    total = httpx.get(f"{other}/api/stats", headers=headers).json()["total"]
    warm = httpx.get(f"{other}/api/stats", headers=headers)
    assert 'cache-app;desc="hit"' in warm.headers["Server-Timing"]
    writer = make_lab(database_url, lab_redis, thirdparty.url, tmp_path)

    assert writer.client.post("/api/leads", json=NEW_LEAD).status_code == 201
    writer.close()
    written_at = time.monotonic()
    fresh = eventually(
        lambda: (
            (r := httpx.get(f"{other}/api/stats", headers=headers)).json()["total"] == total + 1
            and r
        ),
        timeout_s=3.0,
    )

    assert fresh, "the other process kept serving the stale total"
    assert time.monotonic() - written_at < 1.0
    assert 'cache-app;desc="miss"' in fresh.headers["Server-Timing"]


def test_redis_commands_are_spans_of_the_request_not_statements(lab: Lab) -> None:
    with assert_queries(1):  # the SQL statement only
        response = lab.get("/api/leads?limit=5", toggles="redis_cache=on,eager_loading=on")
    trace_id = trace_id_of(response)
    spans = [s for s in lab.spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    redis_spans = [s for s in spans if (s.attributes or {}).get("db.system") == "redis"]

    # The miss stores its value (SET) in a span of its own; the lookup's GETs are folded into the
    # lookup span, which times them (they are its implementation, not something people read).
    assert "SET" in {s.name for s in redis_spans}
    assert "GET" not in {s.name for s in redis_spans}
    (lookup,) = [s for s in spans if s.name == v.cache_span_name(v.CacheLayer.REDIS)]
    assert lookup.attributes[v.CACHE_OUTCOME] == v.CacheOutcome.MISS.value
    assert len(lab.statements(trace_id)) == 1  # Redis spans carry no SQL statement either
    assert 'desc="1 statements"' in response.headers["Server-Timing"]


def test_the_shared_state_poller_records_no_spans(lab: Lab) -> None:
    lab.get("/healthz")  # the poller starts with the first read of the shared state
    lab.spans.clear()

    time.sleep(0.7)  # three polls or so

    assert lab.spans.get_finished_spans() == ()
