"""The guided tour's content: the article's steps, the code each one switches, its live checks.

Baseline → eager loading → async offload → L1 → L2 → edge, each step adding one optimization to
the previous configuration (:func:`latency_lab.dashboard.configs.cumulative`). A step names what to
look for, the functions of the service whose source shows the before/after (read live with
``inspect``), the traffic that exercises it, and checks that compare the step's configuration
with the one before, from the trace store: "statements per list request: 301 → 1 ✓".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from latency_lab.core.toggles import Toggle
from latency_lab.dashboard import configs

LIST_ROUTE, STATS_ROUTE = "/api/leads", "/api/stats"

Value = float | None


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 100 else f"{value:,.1f} ms"


def _count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.1f}"


def _rate(value: float) -> str:
    return f"{value:.0%}"


@dataclass(frozen=True)
class Check:
    """One number compared before and after a step, with what counts as success."""

    label: str
    column: str
    route: str | None
    show: Callable[[float], str]
    passes: Callable[[float | None, float], bool]
    method: str | None = None  # with ``route``: only this method (GET list, not POST create)
    compares: bool = False  # judged only against the step before (needs both measured)


@dataclass(frozen=True)
class CheckResult:
    text: str
    passed: bool | None  # None: not measured yet

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "…"}[self.passed]


@dataclass(frozen=True)
class TourStep:
    number: int
    toggle: Toggle | None
    title: str
    story: str
    look_for: str
    code: tuple[str, ...]
    traffic: str
    checks: tuple[Check, ...]

    @property
    def config(self) -> str:
        return configs.cumulative(self.number).label()

    @property
    def previous_config(self) -> str | None:
        return configs.cumulative(self.number - 1).label() if self.number else None


def evaluate(
    check: Check, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> CheckResult:
    """``label: before → after ✓`` from two summary rows (either may be missing)."""
    old = _value(before, check.column)
    new = _value(after, check.column)
    if new is None:
        return CheckResult(f"{check.label}: not measured yet in this configuration", None)
    if old is None:
        if check.compares:
            text = f"{check.label}: {check.show(new)} (measure the step before to compare)"
            return CheckResult(text, None)
        return CheckResult(f"{check.label}: {check.show(new)}", check.passes(old, new))
    text = f"{check.label}: {check.show(old)} → {check.show(new)}"
    return CheckResult(text, check.passes(old, new))


def _value(row: Mapping[str, Any] | None, column: str) -> Value:
    if row is None:
        return None
    value = row.get(column)
    return None if value is None or pd.isna(value) else float(value)


def row_for(summary: pd.DataFrame, config: str | None) -> dict[str, Any] | None:
    if config is None or summary.empty:
        return None
    rows = summary[summary["config"] == config]
    return rows.iloc[0].to_dict() if not rows.empty else None


def _dropped(factor: float) -> Callable[[float | None, float], bool]:
    return lambda old, new: old is not None and new <= old / factor


def _faster(old: float | None, new: float) -> bool:
    return old is not None and new < old


STEPS: tuple[TourStep, ...] = (
    TourStep(
        0,
        None,
        'Baseline: the article\'s "before"',
        "Every optimization is off. Listing 100 leads runs one query for the page, then three "
        "lazy loads per lead while it is serialized (owner, tags, metadata): 1 + 3N statements. "
        "Every read also waits for an analytics call.",
        "Open the **Trace explorer** on a `GET /api/leads`: three rows of \u00d7100 statements, "
        "outlined as N+1, with the relationship and the fix. p50 sits around 500 ms.",
        ("latency_lab.service.lead_loader:lead_json",),
        "Lead list only (the N+1 page)",
        (
            Check(
                "statements per list request",
                "statements",
                LIST_ROUTE,
                _count,
                lambda old, new: new > 10,
                method="GET",
            ),
            Check("p50 latency", "p50_ms", None, _ms, lambda old, new: new > 0),
        ),
    ),
    TourStep(
        1,
        Toggle.EAGER_LOADING,
        "Eager loading: fix the N+1",
        "One switch ends the lazy loads: the owner, tags and metadata come with the page, in "
        "one statement. The article's fix is the ORM's single JOIN (`joinedload`, "
        "`X-Lab-Loader: joined`); the lab's default goes one step further and has the database "
        "build each lead's JSON (`json`), leaving the ORM's cost out.",
        "Statements per request fall from 1 + 3N to 1, and the database share of the time "
        "collapses (Compare → where the time went).",
        (
            "latency_lab.service.lead_loader:loader_options",
            "latency_lab.service.lead_loader:choose_strategy",
            "latency_lab.service.lead_documents:lead_document",
        ),
        "Lead list only (the N+1 page)",
        (
            Check(
                "statements per list request",
                "statements",
                LIST_ROUTE,
                _count,
                lambda old, new: (old is None or new <= old / 10) and new <= 5,
                method="GET",
            ),
            Check("p50 latency", "p50_ms", None, _ms, _faster, compares=True),
        ),
    ),
    TourStep(
        2,
        Toggle.ASYNC_OFFLOAD,
        "Async offload: third parties off the request path",
        "Email, analytics and enrichment calls are enqueued as RQ jobs instead of being awaited; "
        "real worker processes make them, inside the same trace.",
        "Third-party time on the request path drops to zero; the **Background jobs** page shows "
        "them running in workers, and a trace shows the job after the response.",
        ("latency_lab.service.offload:offload_or_call", "latency_lab.service.offload:deliver"),
        "Realistic mix",
        (
            Check(
                "third-party time per request",
                "ext_ms",
                None,
                _ms,
                lambda old, new: new < 1.0 and (old is None or old > new),
            ),
            Check("jobs enqueued per request", "jobs", None, _count, lambda old, new: new > 0),
        ),
    ),
    TourStep(
        3,
        Toggle.REDIS_CACHE,
        "L1: Redis, cache-aside for hot reads",
        "Reads look in Redis first and go to the database only on a miss (TTL 300 s); writes "
        "invalidate the entries.",
        "The L1 hit rate climbs and statements per request fall again: hot pages come from Redis.",
        (
            "latency_lab.service.api:_cached_read",
            "latency_lab.service.caches:RedisCache.get_or_compute",
        ),
        "Reads only",
        (
            Check("L1 hit rate", "hit_rate_redis", None, _rate, lambda old, new: new >= 0.5),
            Check(
                "statements per request", "statements", None, _count, _dropped(1.5), compares=True
            ),
        ),
    ),
    TourStep(
        4,
        Toggle.APP_CACHE,
        "L2: computed results in the process",
        "The stats endpoint's computed result is kept in the process's memory, invalidated "
        "across processes when data changes.",
        "The L2 hit rate on `/api/stats` climbs and its latency drops to a memory lookup.",
        ("latency_lab.service.api:_computed", "latency_lab.service.caches:AppCache.get_or_compute"),
        "Reads only",
        (
            Check(
                "L2 hit rate on /api/stats",
                "hit_rate_app",
                STATS_ROUTE,
                _rate,
                lambda old, new: new >= 0.5,
            ),
            Check("p50 of /api/stats", "p50_ms", STATS_ROUTE, _ms, _faster, compares=True),
        ),
    ),
    TourStep(
        5,
        Toggle.EDGE_CACHE,
        "CDN: the edge answers public GETs",
        "With the edge cache on, the service marks public GETs and static files cacheable and "
        "the edge serves repeats without reaching Flask at all.",
        "The edge hit rate climbs; the requests it answers never appear at the service. "
        "All on, p50 is far under the article's 50 ms.",
        ("latency_lab.service.request_scope:_cache_headers",),
        "Reads only",
        (
            Check("edge hit rate", "hit_rate_edge", None, _rate, lambda old, new: new >= 0.5),
            Check("p50 latency", "p50_ms", None, _ms, _faster, compares=True),
        ),
    ),
)


def journey(summary: pd.DataFrame) -> CheckResult:
    """The whole story: p50 with everything off against everything on."""
    check = Check("p50, all off → all on", "p50_ms", None, _ms, _dropped(5), compares=True)
    return evaluate(check, row_for(summary, STEPS[0].config), row_for(summary, STEPS[-1].config))
