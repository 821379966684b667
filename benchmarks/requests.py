"""The request-side measurements: each configuration on the mix and on the lead list, and the
list-size sweep for lazy, joined and selectin loading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from latency_lab.benchmarks.plan import BenchPlan, Configuration
from latency_lab.core.toggles import Toggles
from latency_lab.lab.loadgen import DEFAULT_MIX, Endpoint, LoadGenerator, LoadSpec
from latency_lab.service.lead_loader import LoaderStrategy

LEADS_PATH_LIMIT = 100
Tick = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where requests go: the edge (front door) and the service behind it."""

    edge_url: str
    service_url: str
    max_lead_id: int
    admin_token: str | None = None


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
    return {
        "name": config.name,
        "config": config.header,
        "toggles": config.toggles.model_dump(),
        "mix": mix,
        "leads": leads,
    }


def run_sweep(target: Target, plan: BenchPlan, tick: Tick) -> list[dict[str, Any]]:
    """Statements and latency against list size N, per loader, straight at the service.

    Third-party calls are offloaded and caches off, so only loading costs show.
    """
    rows = []
    for size in plan.sweep_sizes:
        for loader in LoaderStrategy:
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
