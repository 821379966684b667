"""Real traces from real processes: time by kind adds up, and one request has one configuration.

The edge, the service (gunicorn) and an RQ worker run as the lab runs them, writing to one trace
store; requests go through the edge (and straight to the service) in each configuration. For
every trace, the self times by kind that the trace explorer shows (``latency_lab.dashboard.traces``)
must sum to the front door's duration, and the edge, the service and the request's jobs must all be
labelled with the configuration the edge decided on, also while the shared toggles flip.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pandas as pd
import pytest

from latency_lab.core.shared_state import SharedState
from latency_lab.core.toggles import TOGGLE_HEADER, Toggles
from latency_lab.dashboard import traces
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store import TraceStore
from tests.deploy.edge_contract import NEW_LEAD
from tests.lab_fixtures import ServiceProcess, eventually, trace_id_of

pytestmark = pytest.mark.usefixtures("worker_process")

ALL_OFF = Toggles()
EDGE_ONLY = Toggles(edge_cache=True)
EAGER_OFFLOAD = Toggles(eager_loading=True, async_offload=True)
L1 = Toggles(eager_loading=True, async_offload=True, redis_cache=True)
ALL_ON = Toggles.all_on()


def _front_door_row(store: TraceStore, trace_id: str) -> dict[str, Any] | None:
    rows = [r for r in store.recent_requests(limit=500) if r["trace_id"] == trace_id]
    if not rows:
        return None
    edge = [r for r in rows if r["role"] == "edge"]
    return (edge or rows)[0]


def _settled_trace(store: TraceStore, trace_id: str, *, jobs: int = 0) -> pd.DataFrame:
    """The trace's spans once its front door and ``jobs`` background jobs have arrived."""

    def arrived() -> bool:
        if _front_door_row(store, trace_id) is None:
            return False
        names = [span["name"] for span in store.trace_spans(trace_id)]
        return names.count(v.SPAN_JOB) >= jobs

    assert eventually(arrived, timeout_s=40), f"trace {trace_id} did not arrive whole"
    time.sleep(0.3)  # the last spans of the same batch
    return traces.annotate(traces.span_frame(store.trace_spans(trace_id)))


def _check_adds_up(store: TraceStore, trace_id: str, *, jobs: int = 0) -> pd.Series:
    annotated = _settled_trace(store, trace_id, jobs=jobs)
    front = _front_door_row(store, trace_id)
    assert front is not None
    by_kind = traces.time_by_kind(annotated[~annotated["off_path"]]).set_index("kind")["time_ms"]
    total, duration = float(by_kind.sum()), float(front["duration_ms"])
    assert total == pytest.approx(duration, rel=0.05), (trace_id, by_kind.to_dict(), duration)
    return by_kind


def _get(url: str, toggles: Toggles, target: str = "/api/leads?limit=10") -> httpx.Response:
    response = httpx.get(url + target, headers={TOGGLE_HEADER: toggles.label()}, timeout=30)
    response.raise_for_status()
    return response


@pytest.fixture
def store(service_process: ServiceProcess) -> TraceStore:
    return TraceStore(service_process.trace_store_url).create()


def test_time_by_kind_adds_up_in_every_configuration(
    edge_url: str,
    service_process: ServiceProcess,
    store: TraceStore,
) -> None:
    straight = _get(service_process.url, ALL_OFF)
    off = _get(edge_url, ALL_OFF)
    edge_miss, edge_hit = _get(edge_url, EDGE_ONLY), _get(edge_url, EDGE_ONLY)
    offloaded = _get(edge_url, EAGER_OFFLOAD)
    l1_miss, l1_hit = (_get(edge_url, L1, "/api/leads?limit=7") for _ in range(2))
    stats = [
        _get(edge_url, ALL_ON.model_copy(update={"edge_cache": False}), "/api/stats")
        for _ in range(2)
    ]
    created = httpx.post(
        f"{edge_url}/api/leads", headers={TOGGLE_HEADER: ALL_OFF.label()}, json=NEW_LEAD, timeout=30
    )
    assert created.status_code == 201, created.text
    assert [r.headers["X-Cache"] for r in (off, edge_miss, edge_hit)] == ["BYPASS", "MISS", "HIT"]

    for response in (straight, off, edge_miss):  # 31 statements and an inline analytics call
        by_kind = _check_adds_up(store, trace_id_of(response))
        assert by_kind["database"] > 0 and by_kind["third_party"] > 0
    assert "database" not in _check_adds_up(store, trace_id_of(edge_hit))
    by_kind = _check_adds_up(store, trace_id_of(offloaded), jobs=1)
    assert "third_party" not in by_kind and by_kind["queue"] > 0 and by_kind["database"] > 0
    assert "database" not in _check_adds_up(store, trace_id_of(l1_hit), jobs=1)
    assert _check_adds_up(store, trace_id_of(l1_miss), jobs=1)["database"] > 0
    assert "database" not in _check_adds_up(store, trace_id_of(stats[1]), jobs=0)
    assert _check_adds_up(store, trace_id_of(created))["third_party"] > 0


def test_the_edge_the_service_and_the_jobs_apply_one_configuration_while_toggles_flip(
    edge_url: str,
    service_process: ServiceProcess,
    store: TraceStore,
    lab_redis: str,
) -> None:
    shared = SharedState.connect(lab_redis)
    shared.set_toggles(Toggles(async_offload=True))
    time.sleep(1.2)  # every process applies a flip within a second
    stop = threading.Event()

    def flip() -> None:  # edge_cache and eager_loading change every 30 ms
        step = 0
        while not stop.is_set():
            step += 1
            shared.set_toggles(
                Toggles(async_offload=True, eager_loading=step % 2 == 0, edge_cache=step % 3 == 0)
            )
            time.sleep(0.03)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        ids = [
            trace_id_of(httpx.get(f"{edge_url}/api/leads?limit=3&offset={i}", timeout=30))
            for i in range(30)
        ]
    finally:
        stop.set()
        flipper.join()

    labels: dict[str, set[str]] = {}
    seen_configs = set()
    for trace_id in ids:
        annotated = _settled_trace(store, trace_id, jobs=1)
        rows = [r for r in store.recent_requests(limit=1000) if r["trace_id"] == trace_id]
        job_configs = {
            a.get(v.CONFIG_KEY)
            for a, name in zip(annotated["attributes"], annotated["name"], strict=True)
            if name == v.SPAN_JOB
        }
        labels[trace_id] = {str(r["config"]) for r in rows} | {str(c) for c in job_configs}
        seen_configs |= labels[trace_id]
    mixed = {t: found for t, found in labels.items() if len(found) != 1}
    print(
        f"\n{len(ids)} requests during flips, {len(seen_configs)} configurations seen, "
        f"{len(mixed)} labelled with more than one"
    )
    assert len(seen_configs) >= 2, "the toggles did not flip during the requests"
    assert mixed == {}
