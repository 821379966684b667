"""The bench's targets: each figure measured in the run, beside its goal, and what misses it.

A missed goal's note is built from the run's own measurements (what the time or memory went
to), so the report never explains a miss with a sentence written before the run.
"""

from __future__ import annotations

from typing import Any

from latency_lab.benchmarks.plan import TARGETS

NOISY = "two shared cores: the load generator, the lab and its exporters compete for them"


def target(
    name: str, measured: float | None, goal: str, met: bool | None, why: str = ""
) -> dict[str, Any]:
    return {
        "figure": name,
        "measured": measured,
        "target": goal,
        "met": met,
        "note": "" if met or met is None else why,
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value and base else None


def _at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def build_targets(
    *,
    by_name: dict[str, dict[str, Any]],
    sweep: list[dict[str, Any]],
    overhead: dict[str, Any],
    store: dict[str, Any],
    memory: dict[str, Any],
    queue: dict[str, Any],
    relay: dict[str, Any],
    default_loader: str,
) -> list[dict[str, Any]]:
    return [
        *_latency_targets(by_name, sweep, default_loader),
        _telemetry_target(overhead),
        *_queue_targets(queue, by_name),
        *_memory_targets(memory),
        _relay_target(relay),
        _dashboard_target(store),
    ]


def _latency_targets(
    by_name: dict[str, dict[str, Any]], sweep: list[dict[str, Any]], default_loader: str
) -> list[dict[str, Any]]:
    low, high = TARGETS.leads_all_off_p50_ms
    off = by_name["all off"]["leads"]["p50_ms"]
    hit = by_name["all on"]["leads"]["p50_ms"]
    uncached = by_name.get("article step 2: +async_offload", by_name["all on"])
    no_cache = uncached["leads"]["p50_ms"]
    profile = uncached.get("profile") or {}
    n500 = next(
        (r["p50_ms"] for r in sweep if r["n"] == 500 and r["loader"] == default_loader), None
    )
    throughput = _ratio(
        by_name["all on"]["mix"]["requests_per_s"], by_name["all off"]["mix"]["requests_per_s"]
    )
    return [
        target(
            "GET /api/leads?limit=100 all off, p50 (ms)",
            off,
            f"{low:.0f}-{high:.0f}",
            off is not None and low <= off <= high,
            NOISY,
        ),
        target(
            "same, all on (cache hit), p50 (ms)",
            hit,
            f"<= {TARGETS.leads_cache_hit_p50_ms:g}",
            _at_most(hit, TARGETS.leads_cache_hit_p50_ms),
            NOISY,
        ),
        target(
            f"same, eager + offload without caches, loader {default_loader}, p50 (ms)",
            no_cache,
            f"<= {TARGETS.leads_no_cache_p50_ms:g}",
            _at_most(no_cache, TARGETS.leads_no_cache_p50_ms),
            _profile_note(profile),
        ),
        target(
            f"same for N=500 (sweep, at the service), loader {default_loader}, p50 (ms)",
            n500,
            f"<= {TARGETS.leads_no_cache_n500_p50_ms:g}",
            _at_most(n500, TARGETS.leads_no_cache_n500_p50_ms),
            "serializing 500 leads with their owner, tags and metadata",
        ),
        target(
            "throughput all on / all off (same workers)",
            throughput,
            f">= {TARGETS.throughput_ratio:.0f}x",
            throughput is not None and throughput >= TARGETS.throughput_ratio,
            NOISY,
        ),
    ]


def _profile_note(profile: dict[str, Any]) -> str:
    """Where a profiled request of the configuration spent its time, biggest groups first."""
    ms = profile.get("ms") or {}
    if not ms:
        return "not profiled in this run"
    top = sorted(ms.items(), key=lambda item: -item[1])[:3]
    parts = ", ".join(f"{group} {value:.1f} ms" for group, value in top)
    return f"profiled {profile.get('duration_ms')} ms: {parts}"


def _telemetry_target(overhead: dict[str, Any]) -> dict[str, Any]:
    pct = overhead.get("overhead_pct")
    on, off = overhead.get("p50_ms_instrumented"), overhead.get("p50_ms_uninstrumented")
    why = (
        f"{on} vs {off} ms: the server span (Flask instrumentation), the lookup and enqueue "
        "spans, the request's accounting, and the export thread sharing the worker's GIL"
        if on and off
        else NOISY
    )
    return target(
        "telemetry overhead, L1-hit path (eager+L1+L2+offload), p50 (%)",
        pct,
        f"<= {TARGETS.telemetry_overhead_pct:.0f}",
        _at_most(pct, TARGETS.telemetry_overhead_pct),
        why,
    )


def _queue_targets(queue: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> list[dict]:
    burst = queue.get("burst") or {}
    drains = {
        name: (c.get("queue") or {}).get("drain_s")
        for name, c in by_name.items()
        if c.get("queue") is not None
    }
    known = {name: s for name, s in drains.items() if s is not None}
    slowest_name = max(known, key=lambda name: known[name]) if known else None
    slowest = known.get(slowest_name) if slowest_name else None
    undrained = [name for name, s in drains.items() if s is None]
    burst_why = (
        f"{burst.get('arrival_rate')} jobs/s arrived, {burst.get('completion_rate')} jobs/s "
        f"completed; {burst.get('backlog_at_end')} left when the load ended"
        if burst
        else "not measured (needs the lab's Redis)"
    )
    return [
        target(
            f"side-effects queue: drain after {burst.get('requests', '-')} uncached eager + "
            "offload reads at concurrency 4 (s)",
            burst.get("drain_s"),
            f"<= {TARGETS.queue_drain_s:g}",
            None if not burst else _at_most(burst.get("drain_s"), TARGETS.queue_drain_s),
            burst_why,
        ),
        target(
            "side-effects queue: slowest drain after any configuration's load (s)",
            slowest,
            f"<= {TARGETS.queue_drain_s:g}",
            None if not drains else (not undrained and _at_most(slowest, TARGETS.queue_drain_s)),
            f"{slowest_name}" + (f"; never drained: {', '.join(undrained)}" if undrained else ""),
        ),
    ]


def _memory_targets(memory: dict[str, Any]) -> list[dict[str, Any]]:
    peak = memory.get("under_load_peak") or {}
    pss = peak.get("pss_mb")
    groups = peak.get("by_process") or {}
    top = ", ".join(
        f"{name} x{int(g['count'])} {g['pss_mb']:.0f} MB" for name, g in list(groups.items())[:4]
    )
    return [
        target(
            f"whole lab under load, peak PSS (MB), {peak.get('processes', '-')} processes",
            pss,
            f"<= {TARGETS.lab_pss_mb:.0f}",
            _at_most(pss, TARGETS.lab_pss_mb),
            f"PSS by process: {top}",
        ),
        target(
            "same, resident sizes summed (RSS, shared pages counted in each process) (MB)",
            memory.get("under_load_peak_rss_mb"),
            "(for comparison)",
            None,
        ),
    ]


def _relay_target(relay: dict[str, Any]) -> dict[str, Any]:
    per_5_s = relay.get("per_5_s")
    return target(
        "outbox relay, idle: database statements per 5 s",
        per_5_s,
        f"<= {TARGETS.relay_idle_statements_per_5_s:g}",
        _at_most(per_5_s, TARGETS.relay_idle_statements_per_5_s),
        f"{relay.get('statements')} statements in {relay.get('window_s')} s",
    )


def _dashboard_target(store: dict[str, Any]) -> dict[str, Any]:
    slowest_query = max(store["query_ms"].values())
    return target(
        f"slowest dashboard overview query on {store['spans']:,} spans (ms)",
        slowest_query,
        f"<= {TARGETS.dashboard_query_ms:.0f}",
        slowest_query <= TARGETS.dashboard_query_ms,
        "SQLite aggregates every row of a full-history scan",
    )
