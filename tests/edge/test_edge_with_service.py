"""The edge in front of the real lead service, both under gunicorn: what reaches Flask.

Requests that reached Flask are counted from the service's own summary rows in the trace store.
"""

from __future__ import annotations

import time

import httpx
import pytest

from latency_lab.core.shared_state import SharedState
from latency_lab.core.toggles import Toggles
from latency_lab.telemetry.store import TraceStore
from tests.lab_fixtures import (
    ServiceProcess,
    eventually,
)

ASSET = "/static/app.js"


def _reached_flask(store: TraceStore, target: str) -> int:
    rows = store.recent_requests(limit=1000)
    return sum(1 for row in rows if row["role"] == "service" and row["target"] == target)


def _settled_count(store: TraceStore, target: str, expected: int) -> int:
    eventually(lambda: _reached_flask(store, target) >= expected, timeout_s=5)
    time.sleep(0.5)  # anything else that reached Flask would be exported by now
    return _reached_flask(store, target)


@pytest.mark.parametrize(
    ("edge_cache", "flask_hits", "x_cache"),
    [
        (True, 1, ["MISS", "HIT", "HIT"]),
        (False, 3, ["BYPASS", "BYPASS", "BYPASS"]),
    ],
)
def test_static_asset_reaches_flask_once_when_on_every_time_when_off(
    edge_url: str,
    service_process: ServiceProcess,
    lab_redis: str,
    edge_cache: bool,
    flask_hits: int,
    x_cache: list[str],
) -> None:
    SharedState.connect(lab_redis).set_toggles(Toggles(edge_cache=edge_cache))
    time.sleep(0.4)  # both processes' pollers see the flip
    store = TraceStore(service_process.trace_store_url).create()

    responses = [httpx.get(f"{edge_url}{ASSET}") for _ in range(3)]

    assert [r.headers["X-Cache"] for r in responses] == x_cache
    assert len({r.content for r in responses}) == 1
    assert _settled_count(store, ASSET, flask_hits) == flask_hits


def test_edge_summary_rows_carry_the_services_statement_count(
    edge_url: str, service_process: ServiceProcess, lab_redis: str
) -> None:
    SharedState.connect(lab_redis).set_toggles(Toggles(edge_cache=True))
    time.sleep(0.4)
    store = TraceStore(service_process.trace_store_url).create()

    miss = httpx.get(f"{edge_url}/api/leads?limit=4")
    hit = httpx.get(f"{edge_url}/api/leads?limit=4")

    assert 'desc="13 statements"' in miss.headers["Server-Timing"]
    assert 'cache-edge;desc="hit"' in hit.headers["Server-Timing"]
    assert miss.json() == hit.json()

    def edge_rows() -> list[dict[str, object]]:
        rows = [
            r
            for r in store.recent_requests(limit=100)
            if r["role"] == "edge" and str(r["target"]).startswith("/api/leads")
        ]
        return rows if len(rows) == 2 else []

    rows = sorted(eventually(edge_rows, timeout_s=5), key=lambda r: r["start_ns"])
    assert [(r["db_statements"], r["cache_hits_edge"]) for r in rows] == [(13, 0), (0, 1)]
