"""The request-side measurements: each configuration on the mix and on the lead list, and the
list-size sweep for every loader (lazy, joined, selectin, rows, json)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from latency_lab.benchmarks.plan import BenchPlan, Configuration
from latency_lab.core.admin_client import AdminClient
from latency_lab.core.toggles import Toggles
from latency_lab.lab.loadgen import DEFAULT_MIX, Endpoint, LoadGenerator, LoadSpec
from latency_lab.service.lead_loader import LoaderStrategy
from latency_lab.telemetry.profiles import CodeGroup, Profile
from latency_lab.telemetry.store import TraceStore

LEADS_PATH_LIMIT = 100
Tick = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where requests go: the edge (front door) and the service behind it."""

    edge_url: str
    service_url: str
    max_lead_id: int
    admin_token: str | None = None
    store_url: str | None = None  # where the profiles are read back (None: not profiled)


def _spec(
    target: Target,
    *,
    base_url: str,
    requests: int,
    concurrency: int,
    toggles: str,
    mix: dict[Endpoint, float],
    list_limit: int = LEADS_PATH_LIMIT,
    headers_loader: str | None = None,
) -> LoadSpec:
    return LoadSpec(
        base_url=base_url,
        requests=requests,
        concurrency=concurrency,
        toggles=toggles,
        mix=mix,
        list_limit=list_limit,
        list_offsets=(0,),
        max_lead_id=target.max_lead_id,
        admin_token=target.admin_token,
        loader=headers_loader,
    )


def run_configuration(
    config: Configuration, target: Target, plan: BenchPlan, tick: Tick
) -> dict[str, Any]:
    """Warm up, then the realistic mix and ``GET /api/leads?limit=100`` alone, via the edge.

    The mix runs at the plan's concurrency (throughput); the lead list runs one request at a
    time, so its percentiles are the latency of one request, not of a queue on two cores.
    """
    leads_only = {Endpoint.LIST: 1.0}

    def run(mix: dict[Endpoint, float], requests: int, concurrency: int) -> dict[str, Any]:
        spec = _spec(
            target,
            base_url=target.edge_url,
            requests=requests,
            concurrency=concurrency,
            toggles=config.header,
            mix=dict(mix),
        )
        return LoadGenerator(spec).run().summary()

    run(DEFAULT_MIX, plan.warmup, plan.concurrency)
    run(leads_only, plan.warmup, 1)
    tick(f"{config.name}: mix")
    mix = run(DEFAULT_MIX, plan.mix_requests, plan.concurrency)
    tick(f"{config.name}: /api/leads")
    leads = run(leads_only, plan.leads_requests, 1)
    tick(f"{config.name}: profiles")
    return {
        "name": config.name,
        "config": config.header,
        "toggles": config.toggles.model_dump(),
        "mix": mix,
        "leads": leads,
        "profile": profile_breakdown(config, target, plan.profiled_requests),
    }


def run_leads_burst(
    target: Target, toggles: Toggles, *, requests: int, concurrency: int
) -> dict[str, Any]:
    """``GET /api/leads?limit=100`` ``requests`` times at ``concurrency``, via the edge: with
    ``async_offload`` on, every one of them enqueues its analytics job."""
    spec = _spec(
        target,
        base_url=target.edge_url,
        requests=requests,
        concurrency=concurrency,
        toggles=toggles.label(),
        mix={Endpoint.LIST: 1.0},
    )
    return LoadGenerator(spec).run().summary()


def profile_breakdown(config: Configuration, target: Target, requests: int) -> dict[str, Any]:
    """Where ``GET /api/leads?limit=100``'s time goes in the service, from ``requests`` profiled
    requests straight at the service: mean milliseconds and share of the request per code group
    (SQLAlchemy, the driver, JSON serialization, Flask/Werkzeug, OpenTelemetry, the lab, other).
    """
    if target.store_url is None or requests <= 0:
        return {}
    url = f"/api/leads?limit={LEADS_PATH_LIMIT}"
    client = AdminClient(target.service_url, token=target.admin_token, timeout_s=60)
    with client:
        ids = [client.profiled_get(url, config.header) for _ in range(requests)]
    profiles = _read_profiles(target.store_url, ids)
    if not profiles:
        return {}
    count = len(profiles)
    totals = {group.value: 0.0 for group in CodeGroup}
    duration = 0.0
    for profile in profiles:
        duration += profile.duration_ms
        for group, ms in profile.by_group().items():
            totals[group.value] += ms
    mean_ms = duration / count
    return {
        "profiles": count,
        "duration_ms": round(mean_ms, 2),
        "ms": {group: round(ms / count, 2) for group, ms in totals.items()},
        "share": {g: round(ms / duration, 3) if duration else None for g, ms in totals.items()},
    }


def _read_profiles(store_url: str, trace_ids: list[str]) -> list[Profile]:
    """The request profiles of ``trace_ids`` (spans reach the store within a second or two)."""
    store = TraceStore(store_url).create()
    try:
        deadline = time.monotonic() + 15
        found: dict[str, Profile] = {}
        while len(found) < len(trace_ids) and time.monotonic() < deadline:
            for trace_id in trace_ids:
                rows = [] if trace_id in found else store.trace_profiles(trace_id)
                if rows:
                    found[trace_id] = Profile.loads(str(rows[0]["document"]))
            time.sleep(0.2)
        return list(found.values())
    finally:
        store.close()


def run_sweep(target: Target, plan: BenchPlan, tick: Tick) -> list[dict[str, Any]]:
    """Statements and latency against list size N, per loader, straight at the service.

    Third-party calls are offloaded and caches off, so only loading costs show.
    """
    rows = []
    for size in plan.sweep_sizes:
        for loader in map(LoaderStrategy, plan.sweep_loaders):
            toggles = Toggles(eager_loading=loader is not LoaderStrategy.LAZY, async_offload=True)
            header = None if loader is LoaderStrategy.LAZY else loader.value
            spec = _spec(
                target,
                base_url=target.service_url,
                requests=plan.sweep_requests,
                concurrency=1,
                toggles=toggles.label(),
                mix={Endpoint.LIST: 1.0},
                list_limit=size,
                headers_loader=header,
            )
            summary = LoadGenerator(spec).run().summary()
            rows.append(
                {
                    "n": size,
                    "loader": loader.value,
                    "statements": summary["statements_per_request"],
                    "p50_ms": summary["p50_ms"],
                    "errors": summary["errors"],
                }
            )
            tick(f"sweep N={size} {loader.value}")
    return rows
