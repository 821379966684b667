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
from latency_lab.benchmarks.plan import BenchPlan, Configuration, configurations
from latency_lab.benchmarks.queue_drain import QueueDrain, drain_after, measure_queue_drain
from latency_lab.benchmarks.relay_idle import measure_idle_relay
from latency_lab.benchmarks.report import build_report, write_reports
from latency_lab.benchmarks.requests import (
    Target,
    run_configuration,
    run_leads_burst,
    run_sweep,
)
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import Toggles
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
    steps = 3 * len(configs) + len(plan.sweep_sizes) * len(plan.sweep_loaders) + 6
    with _lab(settings, url, say) as lab, tqdm(total=steps, desc="bench", unit="step") as bar:

        def tick(label: str) -> None:
            bar.set_postfix_str(label[:40])
            bar.update(1)

        at_rest = lab_memory(lab.pids) if lab.pids else None
        with MemoryWatch(lab.pids) as watch:
            results = [_watching_the_queue(lab, c, plan, tick) for c in configs]
            queue = {"burst": _queue_burst(lab, plan)}
            tick("queue burst")
        sweep = run_sweep(lab.target, plan, tick)
        relay = _idle_relay(settings, lab, plan)
        tick("idle outbox relay")
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
        queue=queue,
        relay=relay,
        default_loader=settings.loader_strategy,
        machine=_machine(),
        started_lab=lab.started_here,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = write_reports(report, out_dir / stamp)
    return report, paths


def _watching_the_queue(
    lab: BenchedLab, config: Configuration, plan: BenchPlan, tick: Callable[[str], None]
) -> dict[str, Any]:
    """One configuration's requests, then how the side-effects queue drained after them."""
    started = time.time()
    result = run_configuration(config, lab.target, plan, tick)
    if lab.redis_url is not None:
        result["queue"] = _drain_figures(drain_after(lab.redis_url, started, time.time()))
    return result


def _queue_burst(lab: BenchedLab, plan: BenchPlan) -> dict[str, Any] | None:
    """The issue's queue figure: uncached eager + offload reads at the plan's concurrency (each
    enqueues an analytics job), then the seconds until the queue is empty."""
    if lab.redis_url is None:
        return None
    toggles = Toggles(eager_loading=True, async_offload=True)
    requests, concurrency = plan.queue_burst_requests, plan.concurrency
    drain = measure_queue_drain(
        lab.redis_url,
        lambda: run_leads_burst(lab.target, toggles, requests=requests, concurrency=concurrency),
    )
    return {"requests": requests, "concurrency": concurrency, **_drain_figures(drain)}


def _drain_figures(drain: QueueDrain) -> dict[str, Any]:
    return {
        "arrivals": drain.arrivals,
        "completions": drain.completions,
        "load_s": round(drain.load_s, 2),
        "arrival_rate": round(drain.arrival_rate, 1),
        "completion_rate": round(drain.completion_rate, 1),
        "backlog_at_end": drain.backlog_at_end,
        "drain_s": None if drain.drain_s is None else round(drain.drain_s, 2),
    }


def _idle_relay(settings: Settings, lab: BenchedLab, plan: BenchPlan) -> dict[str, Any]:
    """Statements an outbox relay sends while the outbox has nothing for it."""
    if lab.redis_url is None:
        return dict(_NO_LAB)
    idle = measure_idle_relay(
        settings.resolved_database_url, lab.redis_url, window_s=plan.relay_idle_window_s
    )
    return {
        "statements": idle.statements,
        "window_s": idle.window_s,
        "per_5_s": round(idle.per_5_s, 2),
        "counted_by": idle.counted_by,
    }


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
