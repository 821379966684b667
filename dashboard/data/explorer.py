"""What the trace explorer and the compare page read: request lists, one trace in detail, and
time by span kind per configuration (from a sample of its front-door traces).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from latency_lab.dashboard import configs, traces
from latency_lab.dashboard.data.connections import LIVE_TTL_S, reading_store
from latency_lab.dashboard.data.summaries import SERVICE_ROLE, since_ns
from latency_lab.telemetry.nplusone import Finding


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def request_list(window_s: int, *, slowest: bool = True, limit: int = 200) -> pd.DataFrame:
    """Requests that reached the service, slowest (or newest) first, ready for a table."""
    since = since_ns(window_s)
    with reading_store() as trace_store:
        rows = (
            trace_store.slowest_requests(limit, since, role=SERVICE_ROLE)
            if slowest
            else trace_store.recent_requests(limit, role=SERVICE_ROLE, since_ns=since)
        )
    return request_frame(rows)


def request_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    columns = [
        "trace_id",
        "time",
        "request",
        "status",
        "duration_ms",
        "statements",
        "ext_ms",
        "jobs",
        "n_plus_one",
        "configuration",
        "config",
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(list(rows))
    frame["time"] = pd.to_datetime(frame["start_ns"], unit="ns", utc=True)
    frame["request"] = (
        frame["method"] + " " + frame["target"].where(frame["target"] != "", frame["route"])
    )
    frame = frame.drop(columns=["n_plus_one"]).rename(
        columns={
            "db_statements": "statements",
            "ext_time_ms": "ext_ms",
            "jobs_enqueued": "jobs",
            "n_plus_one_count": "n_plus_one",
        }
    )
    frame["configuration"] = frame["config"].map(configs.short_label)
    return frame[columns]


@dataclass(frozen=True)
class TraceDetail:
    """One trace, shaped for the explorer."""

    trace_id: str
    spans: pd.DataFrame
    waterfall: pd.DataFrame
    by_kind: pd.DataFrame
    findings: list[Finding]
    jobs: pd.DataFrame


@st.cache_data(ttl=5, show_spinner=False)
def trace_detail(trace_id: str) -> TraceDetail:
    """The waterfall, time by kind, N+1 findings and background jobs of one trace."""
    with reading_store() as trace_store:
        spans = trace_store.trace_spans(trace_id)
    annotated = traces.annotate(traces.span_frame(spans))
    findings = traces.findings_of(annotated)
    jobs = pd.DataFrame(
        [job.__dict__ for job in traces.background_jobs(annotated)],
        columns=["func", "queue", "wait_ms", "run_ms", "status", "after_response_ms"],
    )
    return TraceDetail(
        trace_id=trace_id,
        spans=annotated.drop(columns=["attributes"], errors="ignore"),
        waterfall=traces.waterfall(annotated, findings),
        by_kind=traces.time_by_kind(annotated[~annotated["off_path"]])
        if not annotated.empty
        else traces.time_by_kind(annotated),
        findings=findings,
        jobs=jobs,
    )


@st.cache_data(ttl=10, show_spinner=False)
def kind_breakdown(configs_: tuple[str, ...], window_s: int, sample: int = 50) -> pd.DataFrame:
    """Per configuration: average self time and span count per span kind, per request.

    Reads the spans of the ``sample`` most recent front-door requests of each configuration
    (one indexed query per configuration, then one for their spans), so it stays fast on a
    large store. Columns: ``config``, ``label``, ``kind``, ``time_ms``, ``spans``, ``sampled``.
    """
    frames = []
    for config in configs_:
        spans, sampled = _sampled_spans(config, since_ns(window_s), sample)
        kinds = traces.time_by_kind_per_request(spans)
        kinds["config"], kinds["label"], kinds["sampled"] = (
            config,
            configs.short_label(config),
            sampled,
        )
        frames.append(kinds)
    if not frames:
        return pd.DataFrame(columns=["config", "label", "kind", "time_ms", "spans", "sampled"])
    return pd.concat(frames, ignore_index=True)


def _sampled_spans(config: str, since: int, sample: int) -> tuple[pd.DataFrame, int]:
    """The spans of the configuration's ``sample`` newest front-door requests."""
    with reading_store() as trace_store:
        trace_ids = trace_store.recent_trace_ids(sample, config=config, since_ns=since)
        spans = trace_store.spans_of_traces(trace_ids, traces.SPAN_COLUMNS)
    return traces.span_frame(spans), len(trace_ids)
