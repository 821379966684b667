"""Cache stampede: when a hot L1 entry expires under concurrent requests, the database computes
it once; the other requests wait for that value (single flight), in every service process."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store import TraceStore
from tests.lab_fixtures import eventually
from tests.reliability.conftest import Stack

TOGGLES = "eager_loading=on,redis_cache=on,async_offload=off"
CONCURRENT = 24
WAVES = 3
TTL_S = 3


def burst(url: str, path: str, count: int) -> list[int]:
    """``count`` requests released at the same instant; their status codes."""
    ready = threading.Barrier(count)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"X-Lab-Toggles": TOGGLES}) as client:
            client.get("/healthz")  # connected before the barrier
            ready.wait()
            status = client.get(path).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_a_hot_key_expiring_under_load_is_computed_once_per_expiry(stack: Stack) -> None:
    stack.set_world(db_round_trip_ms=50.0)  # the recomputation takes a while: followers pile up
    # TTL 3 s: every request of a wave arrives well within the entry's life, even on a busy
    # machine (with 1 s a straggler could find it expired and lead a second computation).
    url = stack.start_service(workers=2, threads=16, LAB_REDIS_CACHE_TTL=str(TTL_S))
    started_ns = time.time_ns()

    for wave in range(WAVES):
        if wave:
            time.sleep(TTL_S + 0.6)  # the entry has expired
        assert burst(url, "/api/leads?limit=50", CONCURRENT) == [200] * CONCURRENT

    store = TraceStore(stack.trace_store_url).create()

    def requests() -> list[dict[str, object]]:
        rows = [r for r in store.recent_requests(500, since_ns=started_ns)
                if r["route"] == "/api/leads"]  # fmt: skip
        return rows if len(rows) == WAVES * CONCURRENT else []

    rows = eventually(requests, timeout_s=15)
    assert rows, "the burst's request summaries did not reach the store"
    statements = sum(int(str(row["db_statements"])) for row in rows)
    roles = Counter(
        span["attributes"].get(v.CACHE_SINGLE_FLIGHT)
        for row in rows
        for span in store.trace_spans(str(row["trace_id"]))
        if span["name"] == v.cache_span_name(v.CacheLayer.REDIS)
    )
    store.close()

    assert statements == WAVES, f"{statements} statements for {WAVES} expiries; roles {roles}"
    assert roles[v.SingleFlightRole.LEADER.value] == WAVES
    assert roles[v.SingleFlightRole.FALLBACK.value] == 0
    assert roles[v.SingleFlightRole.FOLLOWER.value] > 0
