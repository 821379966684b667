"""Per-configuration figures from the trace store, shaped for the pages: summaries, time series,
route costs and the headline.

Where the numbers come from: the *front door*. Every request has one summary row flagged
``front_door`` in the store, where it entered the lab: the edge's row when it came through the
edge (latency, status, the edge's hit or miss, and the service's own accounting read back from
``Server-Timing``: statements, third-party time, jobs, L1/L2 outcomes), so edge hits count as
requests with no statements; the service's row when it was sent straight to the service. The
figures are one indexed query over those rows (``front_door=True``); ``measured_at`` says whether
the edge recorded any of a row's requests. The dashboard's own admin calls are not traced, so
they never dilute the figures.

Aggregation happens in the store's SQL (:meth:`TraceStore.aggregate_by_config`,
:meth:`TraceStore.aggregate_by_time`), in time buckets sized so no chart gets more than a few
hundred points per configuration. Results are ``st.cache_data`` with a short TTL, so every page
and the live fragment share one query per refresh.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from latency_lab.dashboard import configs
from latency_lab.dashboard.data.connections import LIVE_TTL_S, reading_store
from latency_lab.dashboard.data.jobs import queue_depth

EDGE_ROLE, SERVICE_ROLE = "edge", "service"
BUCKET_CHOICES_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_BUCKETS = 300
RENAMED = {
    "avg_db_statements": "statements",
    "avg_db_time_ms": "db_ms",
    "avg_ext_calls": "ext_calls",
    "avg_ext_time_ms": "ext_ms",
    "avg_jobs_enqueued": "jobs",
}
SUMMARY_COLUMNS = [
    "config",
    "label",
    "measured_at",
    "first_ns",
    "last_ns",
    "requests",
    "requests_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "avg_ms",
    "error_rate",
    "statements",
    "db_ms",
    "ext_calls",
    "ext_ms",
    "jobs",
    "hit_rate_edge",
    "hit_rate_redis",
    "hit_rate_app",
]
BUCKET_COLUMNS = [
    "time",
    "bucket_start_ns",
    "config",
    "label",
    "measured_at",
    "first_ns",
    "requests",
    "requests_per_s",
    "p50_ms",
    "p95_ms",
    "avg_ms",
    "error_rate",
    "statements",
    "ext_ms",
    "hit_rate_edge",
    "hit_rate_redis",
    "hit_rate_app",
]


# --- windows and buckets -------------------------------------------------------------------------
def since_ns(window_s: int) -> int:
    return time.time_ns() - int(window_s * 1e9)


def bucket_seconds(window_s: int) -> int:
    """The smallest round bucket that keeps a window under :data:`MAX_BUCKETS` buckets."""
    for choice in BUCKET_CHOICES_S:
        if window_s / choice <= MAX_BUCKETS:
            return choice
    return BUCKET_CHOICES_S[-1]


# --- per configuration ---------------------------------------------------------------------------
@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def config_summary(window_s: int, route: str | None = None) -> pd.DataFrame:
    """One row per configuration seen in the window, oldest first (see :data:`SUMMARY_COLUMNS`).

    With ``route`` (a service route such as ``/api/leads``), only that route's requests count,
    measured at the service: the edge forwards every path through one catch-all route.
    """
    since = since_ns(window_s)
    with reading_store() as trace_store:
        if route is not None:
            rows = trace_store.aggregate_by_config(since_ns=since, role=SERVICE_ROLE, route=route)
        else:
            rows = trace_store.aggregate_by_config(since_ns=since, front_door=True)
    return summary_frame(rows)


def summary_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The store's per-configuration rows as the pages read them: renamed, labelled, with
    ``requests_per_s`` and ``measured_at``; requests without a configuration left out."""
    frame = _measured(rows)
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    frame["requests_per_s"] = frame["requests"] / _seconds(frame["first_ns"], frame["last_ns"])
    frame["label"] = frame["config"].map(configs.short_label)
    return frame.sort_values("first_ns")[SUMMARY_COLUMNS].reset_index(drop=True)


def _measured(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    frame = frame[frame["config"] != ""].rename(columns=RENAMED).copy()
    frame["measured_at"] = [EDGE_ROLE if n else SERVICE_ROLE for n in frame["at_edge"]]
    return frame


def _seconds(first_ns: pd.Series, last_ns: pd.Series) -> pd.Series:
    """Seconds between first and last request, at least one (a single request is 1 req/s)."""
    return ((last_ns - first_ns) / 1e9).clip(lower=1.0)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def route_costs(window_s: int, route: str, method: str = "GET") -> pd.DataFrame:
    """Per configuration, the average cost of one route and method at the service.

    ``/api/leads`` is both the list (GET) and the create (POST): "statements per list request"
    needs both filters (:meth:`TraceStore.costs_by_config`). Columns: ``config``, ``requests``,
    ``statements``, ``ext_ms``.
    """
    with reading_store() as trace_store:
        rows = trace_store.costs_by_config(
            route=route, method=method, since_ns=since_ns(window_s), role=SERVICE_ROLE
        )
    frame = pd.DataFrame(rows, columns=["config", "requests", "statements", "ext_ms"])
    return frame.astype({"statements": float, "ext_ms": float})


# --- the headline --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Headline:
    """The configuration running now, the one before it, and the lab-wide gauges."""

    current: dict[str, Any] | None
    previous: dict[str, Any] | None
    queue_depth: int | None
    dropped_spans: int


def current_and_previous(
    summary: pd.DataFrame,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The configuration with the latest request, and the one whose last request came before."""
    if summary.empty:
        return None, None
    ordered = summary.sort_values("last_ns", ascending=False).to_dict("records")
    return ordered[0], (ordered[1] if len(ordered) > 1 else None)


def headline(window_s: int) -> Headline:
    current, previous = current_and_previous(config_summary(window_s))
    return Headline(current, previous, queue_depth(), dropped_spans())


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def dropped_spans() -> int:
    with reading_store() as trace_store:
        return trace_store.dropped_spans()


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def store_counts() -> dict[str, int]:
    with reading_store() as trace_store:
        return trace_store.counts()


# --- over time -----------------------------------------------------------------------------------
@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def time_series(window_s: int) -> pd.DataFrame:
    """Per time bucket and configuration: latency, requests/s, statements, hit rates
    (see :data:`BUCKET_COLUMNS`), at the front door."""
    bucket_s = bucket_seconds(window_s)
    with reading_store() as trace_store:
        rows = trace_store.aggregate_by_time(bucket_s, since_ns=since_ns(window_s), front_door=True)
    return bucket_frame(rows, bucket_s)


def bucket_frame(rows: Sequence[Mapping[str, Any]], bucket_s: float) -> pd.DataFrame:
    """The store's per-bucket rows as the charts read them (see :data:`BUCKET_COLUMNS`)."""
    frame = _measured(rows)
    if frame.empty:
        return pd.DataFrame(columns=BUCKET_COLUMNS)
    frame["time"] = pd.to_datetime(frame["bucket_start_ns"], unit="ns", utc=True)
    frame["label"] = frame["config"].map(configs.short_label)
    frame["requests_per_s"] = frame["requests"] / bucket_s
    ordered = frame.sort_values(["bucket_start_ns", "first_ns"])
    return ordered[BUCKET_COLUMNS].reset_index(drop=True)


def hit_rates_long(series: pd.DataFrame) -> pd.DataFrame:
    """``time``, ``layer``, ``hit_rate`` rows for the layers that were consulted."""
    layers = {"hit_rate_edge": "edge (CDN)", "hit_rate_redis": "L1 Redis", "hit_rate_app": "L2 app"}
    if series.empty:
        return pd.DataFrame(columns=["time", "layer", "hit_rate"])
    long = series.melt(
        id_vars=["time"], value_vars=list(layers), var_name="layer", value_name="hit_rate"
    )
    long["layer"] = long["layer"].map(layers)
    return long.dropna(subset=["hit_rate"]).reset_index(drop=True)
