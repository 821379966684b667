"""Soak: the realistic mix against the lab's real processes, the switches flipped as people do.

Every process runs as ``latency-lab up`` runs it (the service and the edge under gunicorn, the
simulator, an RQ worker, the outbox relay, Redis), on a copy of the seeded SQLite database. The
load generator sends the default mix (lists, details, stats, static files, a few creates)
through the edge while the toggles change every ``flip_every_s``. Afterwards, by counts:

* **0 errors**: every response below 400, no transport error;
* **memory**: the lab's resident memory (RSS summed over every process and its children) grows
  at most 5 % from the end of the warm-up to the end of the run. The third-party simulator is
  reported but not counted: it stands for the outside world, and keeps a log of the last
  100,000 calls it received by design (about 1 KB each), so it grows for hours under load;
* **the outbox** stays bounded: side effects in flight (pending + dispatched) never pile up and
  drain to 0 once the load stops; delivered rows are pruned after the retention window, which
  the soak shortens (``LAB_OUTBOX_RETENTION_HOURS``) so the pruning happens during the run;
* **the trace store** stays within its retention bound (``LAB_TRACE_RETENTION_MAX_SPANS``, lowered
  here): at most the bound plus what the exporters write between two trims (each process trims
  once it has written 5 % of the bound, so at most 5 % of the bound plus one export batch each).

The CI version runs 75 s with a flip every 15 s; the full one is 30 minutes with a flip every
minute (``-s`` prints the figures)::

    .venv/bin/pytest tests/reliability/test_soak.py -m slow -s
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from latency_lab.core.toggles import Toggles
from latency_lab.lab.loadgen import DEFAULT_MIX, Endpoint, LoadGenerator, LoadSpec, Sample
from latency_lab.lab.redis_server import free_port
from latency_lab.service.db import build_engine, session_factory
from latency_lab.service.models import OutboxEvent, OutboxState, utcnow
from latency_lab.telemetry.store import TraceStore
from tests.lab_fixtures import SEED_LEADS, eventually, start_gunicorn, start_process, wait_until_up
from tests.reliability.conftest import Stack

# The stand-in for the outside world: its call log grows by design (see the module docstring).
NOT_THE_LAB = ("simulator",)
TRIM_FRACTION = 0.05  # the trace store exporter trims after writing this share of the bound
EXPORT_BATCH = 128  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE, set for every process here
PRUNE_FRACTION = 4  # the relay prunes every quarter of the retention window


@dataclass(frozen=True)
class SoakPlan:
    duration_s: float
    flip_every_s: float
    warm_up_s: float
    rate_per_s: float
    outbox_retention_s: float
    trace_max_spans: int
    read_every_s: float


SHORT = SoakPlan(
    duration_s=75,
    flip_every_s=15,
    warm_up_s=30,
    rate_per_s=12,
    outbox_retention_s=12,
    trace_max_spans=5_000,
    read_every_s=3,
)
FULL = SoakPlan(
    duration_s=1800,
    flip_every_s=60,
    warm_up_s=300,
    rate_per_s=15,
    outbox_retention_s=120,
    trace_max_spans=50_000,
    read_every_s=15,
)


@dataclass(frozen=True)
class Reading:
    """What the soak sees at one moment."""

    at_s: float
    rss_mb: dict[str, float]
    outbox: dict[str, int]
    spans: int

    @property
    def lab_rss_mb(self) -> float:
        return sum(mb for name, mb in self.rss_mb.items() if name not in NOT_THE_LAB)

    @property
    def in_flight(self) -> int:
        return self.outbox["pending"] + self.outbox["dispatched"]


@dataclass
class Soak:
    stack: Stack
    plan: SoakPlan
    readings: list[Reading] = field(default_factory=list)
    flips: list[str] = field(default_factory=list)
    edge_url: str = ""
    _store: TraceStore | None = None

    # --- the lab -------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            "LAB_OUTBOX_RETENTION_HOURS": str(self.plan.outbox_retention_s / 3600),
            "LAB_TRACE_RETENTION_MAX_SPANS": str(self.plan.trace_max_spans),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(EXPORT_BATCH),
        }

    def start(self) -> None:
        stack, env = self.stack, self.env()
        simulator_port = free_port()
        self._gunicorn(
            "simulator",
            "latency_lab.simulator.app:create_thirdparty_app()",
            simulator_port,
            "/healthz",
            **env,
        )
        env["LAB_THIRDPARTY_URL"] = f"http://127.0.0.1:{simulator_port}"
        for name, module in (("worker", "worker.process"), ("relay", "worker.relay")):
            stack.processes[name] = start_process(
                [sys.executable, "-m", f"latency_lab.{module}"],
                env=stack.env(**env),
                log_file=stack.workdir / f"{name}.log",
            )
        service_url = stack.start_service(workers=2, threads=4, **env)
        edge_port = free_port()
        self._gunicorn(
            "edge",
            "latency_lab.edge.app:create_edge_app()",
            edge_port,
            "/edge/healthz",
            LAB_SERVICE_URL=service_url,
            **env,
        )
        self.edge_url = f"http://127.0.0.1:{edge_port}"
        stack.wait_for_worker("worker")

    def _gunicorn(self, name: str, factory: str, port: int, health: str, **env: str) -> None:
        log_file = self.stack.workdir / f"{name}.log"
        process = start_gunicorn(
            factory, port=port, env=self.stack.env(**env), log_file=log_file, threads=8
        )
        self.stack.processes[name] = process
        wait_until_up(f"http://127.0.0.1:{port}{health}", process, log_file, timeout_s=30)

    # --- what it sees ------------------------------------------------------------------------
    def read(self, started: float) -> Reading:
        return Reading(
            at_s=time.monotonic() - started,
            rss_mb=self.resident_mb(),
            outbox=self.stack.outbox_counts(),
            spans=self.store().counts()["spans"],
        )

    def resident_mb(self) -> dict[str, float]:
        """RSS per lab process, its children included (gunicorn's workers, RQ's)."""
        pids = {name: process.pid for name, process in self.stack.processes.items()}
        assert self.stack.redis_server.process is not None
        pids["redis"] = self.stack.redis_server.process.pid
        return {name: _tree_rss_mb(pid) for name, pid in pids.items()}

    def store(self) -> TraceStore:
        if self._store is None:
            self._store = TraceStore(self.stack.trace_store_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> list[Sample]:
        plan = self.plan
        spec = LoadSpec(
            base_url=self.edge_url,
            requests=int(plan.duration_s * plan.rate_per_s),
            concurrency=4,
            rate_per_s=plan.rate_per_s,
            mix=dict(DEFAULT_MIX),
            max_lead_id=SEED_LEADS,
            max_owner_id=20,
            timeout_s=30.0,
        )
        generator = LoadGenerator(spec).start()
        started, stop = time.monotonic(), threading.Event()
        watcher = threading.Thread(target=self._watch, args=(started, stop), daemon=True)
        watcher.start()
        report = generator.wait()
        stop.set()
        watcher.join()
        return report.samples

    def _watch(self, started: float, stop: threading.Event) -> None:
        configurations = toggle_sequence()
        next_flip = next_read = started
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_flip:
                self.flip(next(configurations), now - started)
                next_flip += self.plan.flip_every_s
            if now >= next_read:
                self.readings.append(self.read(started))
                next_read += self.plan.read_every_s
            stop.wait(max(0.05, min(next_flip, next_read) - time.monotonic()))

    def flip(self, toggles: Toggles, at_s: float) -> None:
        response = httpx.put(
            f"{self.stack.service_url}/admin/toggles", json=toggles.model_dump(), timeout=10
        )
        response.raise_for_status()
        on = [name for name, value in toggles.model_dump().items() if value] or ["all off"]
        self.flips.append(f"{at_s:6.1f} s  {', '.join(on)}")


def toggle_sequence() -> itertools.cycle[Toggles]:
    """All off, all on, then every other combination in a fixed shuffled order."""
    names = list(Toggles.model_fields)
    combos = [
        dict(zip(names, values, strict=True))
        for values in itertools.product((False, True), repeat=len(names))
    ]
    first, last = combos[0], combos[-1]
    middle = combos[1:-1]
    random.Random(15).shuffle(middle)
    return itertools.cycle([Toggles(**c) for c in (first, last, *middle)])


def _tree_rss_mb(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


# --- the figures and the bounds ------------------------------------------------------------------
def figures(soak: Soak, samples: list[Sample]) -> dict[str, Any]:
    readings, store = soak.readings, soak.store()
    return {
        "requests": len(samples),
        "errors": [(s.endpoint.value, s.status, s.error) for s in samples if not _fine(s)],
        "by_endpoint": {e.value: sum(s.endpoint is e for s in samples) for e in Endpoint},
        "creates": sum(s.endpoint is Endpoint.CREATE for s in samples),
        "flips": soak.flips,
        "rss_mb": memory(readings, soak.plan.warm_up_s),
        "outbox_in_flight_max": max(r.in_flight for r in readings),
        "outbox_end": readings[-1].outbox,
        "spans_max": max(r.spans for r in readings),
        "store_trims_seen": sum(b.spans < a.spans for a, b in itertools.pairwise(readings)),
        "spans_exported": sum(int(p["exported"]) for p in store.process_stats()),
        "spans_dropped": store.dropped_spans(),
    }


def _fine(sample: Sample) -> bool:
    return sample.error is None and sample.status < 400


def memory(readings: list[Reading], warm_up_s: float) -> dict[str, Any]:
    """The lab's resident memory after the warm-up and at the end (means of three readings
    each), and each process's, the simulator's included."""
    warm = [r for r in readings if r.at_s >= warm_up_s]
    first, last = warm[:3], warm[-3:]

    def mean(part: list[Reading], name: str | None = None) -> float:
        values = [r.rss_mb[name] if name else r.lab_rss_mb for r in part]
        return sum(values) / len(values)

    baseline, end = mean(first), mean(last)
    return {
        "after_warm_up": round(baseline, 1),
        "end": round(end, 1),
        "growth_pct": round(100 * (end / baseline - 1), 2),
        "by_process": {
            name: [round(mean(first, name), 1), round(mean(last, name), 1)]
            for name in last[-1].rss_mb
        },
    }


def delivered_past_the_window(stack: Stack, plan: SoakPlan) -> int:
    """Delivered rows the relay should have pruned by now (one prune interval of grace, plus a
    pass's worth)."""
    grace_s = plan.outbox_retention_s * (1 + 1 / PRUNE_FRACTION) + 2.0
    engine = build_engine(stack.database_url)
    try:
        with session_factory(engine)() as session:
            query = select(func.count()).where(
                OutboxEvent.state == OutboxState.DELIVERED.value,
                OutboxEvent.updated_at < utcnow() - timedelta(seconds=grace_s),
            )
            return int(session.scalar(query) or 0)
    finally:
        engine.dispose()


def assert_bounded(soak: Soak, found: dict[str, Any]) -> None:
    plan, stack = soak.plan, soak.stack
    assert found["errors"] == [], found["errors"][:20]
    assert len(soak.flips) >= plan.duration_s // plan.flip_every_s
    assert found["rss_mb"]["growth_pct"] <= 5.0, found["rss_mb"]

    # The outbox: in flight stays small (a write's 3 rows, held for a few seconds at most).
    writes_per_s = plan.rate_per_s * DEFAULT_MIX[Endpoint.CREATE] / sum(DEFAULT_MIX.values())
    assert found["outbox_in_flight_max"] <= 3 * writes_per_s * 15 + 10, found
    drained = eventually(
        lambda: stack.outbox_counts()["pending"] + stack.outbox_counts()["dispatched"] == 0,
        timeout_s=30,
    )
    assert drained, stack.outbox_counts()
    time.sleep(plan.outbox_retention_s * (1 + 1 / PRUNE_FRACTION) + 2.0)  # the last window
    assert delivered_past_the_window(stack, plan) == 0
    left = sum(stack.outbox_counts().values())
    assert left < 3 * found["creates"], "delivered rows were never pruned"

    # The trace store: trimmed to its bound, give or take what is written between two trims.
    writers = sum(1 for _ in soak.store().process_stats())
    slack = writers * (int(plan.trace_max_spans * TRIM_FRACTION) + EXPORT_BATCH)
    assert found["spans_max"] <= plan.trace_max_spans + slack, (found["spans_max"], slack)
    assert found["store_trims_seen"] >= 1, "the store was never trimmed"


def soak(stack: Stack, plan: SoakPlan, report_to: Path) -> None:
    lab = Soak(stack, plan)
    try:
        lab.start()
        samples = lab.run()
        found = figures(lab, samples)
        report_to.write_text(json.dumps(found, indent=2) + "\n")
        print("\n--- soak ---\n" + json.dumps(found, indent=2))
        assert_bounded(lab, found)
    finally:
        lab.close()


@pytest.mark.timeout(300)
def test_a_short_soak_stays_within_every_bound(stack: Stack, tmp_path: Path) -> None:
    soak(stack, SHORT, tmp_path / "soak.json")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_half_an_hour_of_flipped_switches_stays_within_every_bound(
    stack: Stack, tmp_path: Path
) -> None:
    soak(stack, FULL, tmp_path / "soak.json")
