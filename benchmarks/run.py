"""One bench run: find (or start) the lab, measure everything, write the reports."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx
from tqdm import tqdm

from latency_lab.benchmarks import lab_costs
from latency_lab.benchmarks.memory import MemoryWatch, lab_memory
from latency_lab.benchmarks.plan import BenchPlan, configurations
from latency_lab.benchmarks.report import build_report, write_reports
from latency_lab.benchmarks.requests import Target, run_configuration, run_sweep
from latency_lab.core.settings import Settings
from latency_lab.lab.redis_server import free_port
from latency_lab.lab.runtime import (
    HttpProbe,
    Lab,
    LabOptions,
    Supervisor,
    child_environment,
    gunicorn_spec,
    read_lab_info,
)

Say = Callable[[str], None]


@dataclass
class BenchedLab:
    """What the bench knows about the lab it measures."""

    target: Target
    pids: list[int]
    redis_url: str | None  # None: not ours to spawn services next to (an external --url)
    started_here: bool


def run_bench(
    settings: Settings, *, url: str | None, quick: bool, out_dir: Path, say: Say
) -> tuple[dict[str, Any], list[Path]]:
    plan = BenchPlan.smoke() if quick else BenchPlan.full()
    configs = configurations()
    steps = 3 * len(configs) + 3 * len(plan.sweep_sizes) + 4
    with _lab(settings, url, say) as lab, tqdm(total=steps, desc="bench", unit="step") as bar:

        def tick(label: str) -> None:
            bar.set_postfix_str(label[:40])
            bar.update(1)

        at_rest = lab_memory(lab.pids) if lab.pids else None
        with MemoryWatch(lab.pids) as watch:
            results = [run_configuration(c, lab.target, plan, tick) for c in configs]
        sweep = run_sweep(lab.target, plan, tick)
        overhead = {
            **_overhead(settings, lab, plan, say),
            "profiling": _profiling_overhead(settings, lab, plan),
        }
        tick("telemetry overhead")
        ingest = lab_costs.trace_store_ingest(plan.ingest_writers, plan.ingest_spans_per_writer)
        tick("trace store ingest")
        store = lab_costs.store_at_scale(plan.store_requests, plan.store_spans_per_request)
        tick("dashboard queries")
        memory = {
            "at_rest": at_rest.as_dict() if at_rest else None,
            "under_load_peak": watch.peak.as_dict() if watch.peak.processes else None,
            "under_load_peak_rss_mb": watch.peak_rss_mb or None,
        }
        tick("report")
    report = build_report(
        plan=plan,
        target=lab.target,
        configs=results,
        sweep=sweep,
        overhead=overhead,
        ingest=ingest,
        store=store,
        memory=memory,
        machine=_machine(),
        started_lab=lab.started_here,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = write_reports(report, out_dir / stamp)
    return report, paths


@contextlib.contextmanager
def _lab(settings: Settings, url: str | None, say: Say) -> Iterator[BenchedLab]:
    if url:
        yield BenchedLab(_target(url, url, settings), [], None, False)
        return
    running = read_lab_info(settings)
    if running is not None:
        say(f"measuring the lab already running from {settings.var_dir} (pid {running.pid})")
        target = _target(running.urls["edge"], running.urls["service"], settings)
        yield BenchedLab(target, list(running.processes.values()), running.urls["redis"], False)
        return
    say("no lab running: starting one for the bench (it stops when the bench ends)")
    lab = Lab(settings, LabOptions(dashboard=False), say=lambda _message: None)
    # SIGTERM would end this process without unwinding: the lab's processes would outlive it.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        lab.start()
        info = lab.info()
        target = _target(info.urls["edge"], info.urls["service"], settings)
        yield BenchedLab(target, list(info.processes.values()), lab.redis_url, True)
    finally:
        lab.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def _target(edge_url: str, service_url: str, settings: Settings) -> Target:
    """Where to send requests, and how many leads there are to ask for."""
    response = httpx.get(f"{service_url}/api/leads?limit=1", timeout=30)
    response.raise_for_status()
    max_lead_id = max(1, int(response.json()["total"]))
    return Target(
        edge_url,
        service_url,
        max_lead_id,
        settings.admin_token,
        store_url=settings.resolved_trace_store_url,
    )


def _overhead(settings: Settings, lab: BenchedLab, plan: BenchPlan, say: Say) -> dict[str, Any]:
    """Two fresh single-worker services, identical but for ``OTEL_SDK_DISABLED``."""
    variants = {
        "instrumented": {"OTEL_SDK_DISABLED": "false"},
        "uninstrumented": {"OTEL_SDK_DISABLED": "true"},
    }
    with _services(settings, lab, variants) as urls:
        return lab_costs.telemetry_overhead(urls, plan.overhead_requests) if urls else _NO_LAB


def _profiling_overhead(settings: Settings, lab: BenchedLab, plan: BenchPlan) -> dict[str, Any]:
    """Two fresh single-worker services, identical but for ``LAB_PROFILE_EVERY``."""
    variants = {
        "sampling enabled": {"LAB_PROFILE_EVERY": "1000000000"},
        "sampling disabled": {"LAB_PROFILE_EVERY": "0"},
    }
    with _services(settings, lab, variants) as urls:
        return lab_costs.profiling_overhead(urls, plan.overhead_requests) if urls else _NO_LAB


_NO_LAB = {"skipped": "needs the embedded lab (not measured against --url)"}


@contextlib.contextmanager
def _services(
    settings: Settings, lab: BenchedLab, variants: dict[str, dict[str, str]]
) -> Iterator[dict[str, str]]:
    """One fresh single-worker service per variant of the environment; their URLs by name
    (none without the embedded lab's Redis)."""
    if lab.redis_url is None:
        yield {}
        return
    base = child_environment(settings, lab.redis_url)
    urls: dict[str, str] = {}
    supervisors = []
    try:
        for name, env in variants.items():
            port = free_port()
            supervisor = Supervisor(settings.log_dir, base | env)
            url = f"http://127.0.0.1:{port}"
            spec = gunicorn_spec(
                f"bench-{name.replace(' ', '-')}",
                "latency_lab.service.app:create_app()",
                host="127.0.0.1",
                port=port,
                threads=4,
                workers=1,
                probe=HttpProbe(f"{url}/healthz"),
            )
            supervisor.wait_ready([supervisor.spawn(spec)], 60)
            supervisors.append(supervisor)
            urls[name] = url
        yield urls
    finally:
        for supervisor in supervisors:
            supervisor.stop(5)


def _machine() -> dict[str, Any]:
    import os
    import platform

    import psutil

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
