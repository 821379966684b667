"""Load with faults: mixed reads and writes on loopback while Redis restarts, a worker is killed
mid-job and the providers fail. Afterwards: no unexpected 5xx, every created lead is there, and
every side effect was delivered exactly once in effect (or, visibly, given up).

The CI run is short (about 25 s of load); the long one is a documented command::

    .venv/bin/pytest tests/reliability/test_load.py -m slow -s

Both print their figures (``-s`` shows them): requests, errors by kind, p50/p99, deliveries.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from latency_lab.lab.loadgen import Endpoint, LoadGenerator, LoadReport, LoadSpec
from latency_lab.service.db import build_engine, session_factory
from latency_lab.service.models import OutboxEvent
from tests.lab_fixtures import SEED_LEADS, eventually
from tests.reliability.conftest import Stack, collect_calls

OFFLOADED = "eager_loading=on,redis_cache=on,app_cache=on,async_offload=on"
INLINE = "eager_loading=on,redis_cache=on,app_cache=on,async_offload=off"
MIX = {Endpoint.LIST: 35, Endpoint.DETAIL: 30, Endpoint.STATS: 10, Endpoint.CREATE: 25}
FLAKY = {"failure_rate": 0.15}
HEALTHY = {"failure_rate": 0.0}
# Providers that take a moment: workers are mid-job most of the time, so a kill interrupts one.
PROVIDER = {"latency_ms": 30.0, "jitter_ms": 10.0}


@dataclass
class Fault:
    at_s: float
    name: str
    act: Callable[[], object]


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    happened: list[str] = field(default_factory=list)

    def run(self, faults: list[Fault], stop: threading.Event) -> None:
        for fault in sorted(faults, key=lambda f: f.at_s):
            if stop.wait(max(0.0, self.started + fault.at_s - time.monotonic())):
                return
            fault.act()
            self.happened.append(f"{time.monotonic() - self.started:5.1f} s  {fault.name}")


def faults_for(stack: Stack, duration_s: float) -> list[Fault]:
    """Every fault once per ~30 s of load, in an order that exercises each on its own."""
    faults: list[Fault] = []
    for start in range(0, max(1, int(duration_s // 30)) * 30, 30):
        faults += [
            Fault(start + 3, "providers fail 15% of calls",
                  lambda: stack.set_world(email=FLAKY, analytics=FLAKY, enrichment=FLAKY)),
            Fault(start + 6, "Redis killed (SIGKILL)", stack.kill_redis),
            Fault(start + 9, "Redis restarted, empty", stack.start_redis),
            Fault(start + 13, "worker-1 killed mid-job (SIGKILL)", lambda: _replace_worker(stack)),
            Fault(start + 20, "providers healthy again",
                  lambda: stack.set_world(email=HEALTHY, analytics=HEALTHY, enrichment=HEALTHY)),
        ]  # fmt: skip
    return faults


def _replace_worker(stack: Stack) -> None:
    victim = (
        "worker-1"
        if "worker-1" in stack.processes
        else next(
            name for name in stack.processes if name.startswith("worker") and "killed" not in name
        )
    )
    stack.kill_worker(victim)
    stack.start_worker(f"worker-{len(stack.processes) + 1}", wait=False)


def run_load_with_faults(stack: Stack, duration_s: float, rate_per_s: float) -> dict[str, Any]:
    stack.set_world(email=PROVIDER, analytics=PROVIDER, enrichment=PROVIDER)
    for n in (1, 2):
        stack.start_worker(f"worker-{n}", wait=False)  # starting while the service starts
    stack.start_relay()
    stack.start_service(workers=2, threads=4)
    for n in (1, 2):
        stack.wait_for_worker(f"worker-{n}")
    requests = int(duration_s * rate_per_s)
    common = LoadSpec(base_url=stack.service_url, mix=dict(MIX), max_lead_id=SEED_LEADS,
                      max_owner_id=20, timeout_s=30.0)  # fmt: skip
    generators = [
        LoadGenerator(replace(common, requests=requests * 3 // 4, concurrency=6,
                              rate_per_s=rate_per_s * 3 / 4, toggles=OFFLOADED, seed=1)),
        LoadGenerator(replace(common, requests=requests // 4, concurrency=3,
                              rate_per_s=rate_per_s / 4, toggles=INLINE, seed=2)),
    ]  # fmt: skip
    timeline, stop = Timeline(), threading.Event()
    chaos = threading.Thread(target=timeline.run, args=(faults_for(stack, duration_s), stop))
    for generator in generators:
        generator.start()
    chaos.start()
    reports = [generator.wait() for generator in generators]
    stop.set()
    chaos.join()
    stack.set_world(email=HEALTHY, analytics=HEALTHY, enrichment=HEALTHY)
    load_s = time.monotonic() - timeline.started
    drained = eventually(lambda: _settled(stack), timeout_s=120, interval_s=0.5)
    return _figures(stack, reports, timeline, load_s, drained=bool(drained))


def _settled(stack: Stack) -> bool:
    counts = stack.outbox_counts()
    return counts["pending"] == 0 and counts["dispatched"] == 0


def _figures(
    stack: Stack, reports: list[LoadReport], timeline: Timeline, load_s: float, *, drained: bool
) -> dict[str, Any]:
    samples = [sample for report in reports for sample in report.samples]
    merged = LoadReport(samples=samples, started=0.0, finished=load_s)
    kinds = Counter(sample.error or str(sample.status) for sample in samples)
    calls = collect_calls(stack.thirdparty)
    return {
        "load_s": round(load_s, 1),
        "summary": merged.summary(),
        "by_status": dict(sorted(kinds.items())),
        "by_endpoint": dict(Counter(sample.endpoint.value for sample in samples)),
        "created": sum(s.endpoint is Endpoint.CREATE and s.status == 201 for s in samples),
        "server_errors": [
            (s.endpoint.value, s.status, s.error) for s in samples if s.status >= 500 or s.error
        ],
        "faults": timeline.happened,
        "outbox": stack.outbox_counts(),
        "outbox_dispatched_again": _dispatched_again(stack),
        "drained": drained,
        "deliveries": calls["counts"],
        "calls": calls["calls"],
    }


def _dispatched_again(stack: Stack) -> int:
    """Rows whose job had to be dispatched more than once (lost with Redis, or re-sent)."""
    engine = build_engine(stack.database_url)
    try:
        with session_factory(engine)() as session:
            query = select(func.count()).where(OutboxEvent.dispatches > 1)
            return int(session.scalar(query) or 0)
    finally:
        engine.dispose()


def check_exactly_once(stack: Stack, figures: dict[str, Any]) -> dict[str, int]:
    """Each outbox row: delivered once (by its idempotency key), or dropped/failed visibly."""
    delivered = Counter(
        call["idempotency_key"] for call in figures["calls"] if call["outcome"] == "delivered"
    )
    engine = build_engine(stack.database_url)
    try:
        with session_factory(engine)() as session:
            columns = (OutboxEvent.event_id, OutboxEvent.task, OutboxEvent.state,
                       OutboxEvent.last_error)  # fmt: skip
            rows = session.execute(select(*columns)).all()
    finally:
        engine.dispose()
    problems = []
    for event_id, task, state, error in rows:
        times = delivered.get(event_id, 0)
        if state == "delivered" and times != 1:
            problems.append(f"{task} {event_id}: delivered {times} times")
        elif state == "dropped" and task != "track_event":
            problems.append(f"{task} {event_id}: dropped, but only analytics is best-effort")
        elif state == "failed" and "RQ gave up" not in (error or ""):
            problems.append(f"{task} {event_id}: failed without RQ giving up ({error})")
        elif state in ("pending", "dispatched"):
            problems.append(f"{task} {event_id}: still {state}")
    assert problems == [], problems[:20]
    return dict(Counter(state for _, _, state, _ in rows))


def report(figures: dict[str, Any], path: Path) -> None:
    printable = {key: value for key, value in figures.items() if key != "calls"}
    path.write_text(json.dumps(printable, indent=2, default=str) + "\n")
    print("\n--- load with faults ---")
    print(json.dumps(printable, indent=2, default=str))


def assert_nothing_lost(stack: Stack, figures: dict[str, Any]) -> None:
    assert figures["server_errors"] == [], figures["server_errors"][:20]
    assert figures["drained"], f"outbox never settled: {figures['outbox']}"
    assert stack.lead_count("Loadtest Co %") == figures["created"]
    states = check_exactly_once(stack, figures)
    assert states.get("delivered", 0) >= 2 * figures["created"]
    assert sum(d["duplicates"] for d in figures["deliveries"].values()) >= 0


def test_load_with_faults_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    figures = run_load_with_faults(stack, duration_s=25, rate_per_s=24)
    report(figures, tmp_path / "load-report.json")
    assert len(figures["faults"]) == 5
    assert_nothing_lost(stack, figures)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_long_load_with_faults_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    figures = run_load_with_faults(stack, duration_s=300, rate_per_s=30)
    report(figures, tmp_path / "load-report.json")
    assert_nothing_lost(stack, figures)
