"""Shaping traces and summaries: effective kinds, self time, waterfall rows, front-door joins."""

from __future__ import annotations

from typing import Any

import pandas as pd

from latency_lab.core.toggles import Toggles
from latency_lab.dashboard import data, traces
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.nplusone import normalize_statement
from tests.dashboard.factories import LAZY, LabTraces

MS = 1_000_000


def span(
    span_id: str,
    parent: str | None,
    name: str,
    kind: str,
    lab_kind: str,
    start: float,
    end: float,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "trace_id": "t" * 32,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": kind,
        "service": "latency-lab-service",
        "start_ns": int(start * MS),
        "end_ns": int(end * MS),
        "duration_ms": end - start,
        "status": "UNSET",
        "lab_kind": lab_kind,
        "statement": extra.pop("statement", None),
        "attributes": extra,
    }


def inline_request() -> pd.DataFrame:
    """An edge-forwarded request: two statements, one inline third-party call (with its HTTP
    client and the simulator's server span beneath), and an enqueued job run by a worker."""
    return traces.span_frame(
        [
            span("e", None, v.SPAN_EDGE, "SERVER", "application", 0, 100),
            span("c", "e", "GET", "CLIENT", "application", 1, 99),
            span("s", "c", "GET /api/leads", "SERVER", "application", 2, 98),
            span("d1", "s", "SELECT", "CLIENT", "database", 3, 13, statement="SELECT 1"),
            span("d2", "s", "SELECT", "CLIENT", "database", 13, 23, statement="SELECT 2"),
            span(
                "x",
                "s",
                "third_party.call analytics",
                "CLIENT",
                "third_party",
                30,
                80,
                **{v.THIRD_PARTY_PROVIDER: "analytics"},
            ),
            span("xh", "x", "POST", "CLIENT", "application", 31, 79),
            span("xs", "xh", "POST /analytics", "SERVER", "application", 32, 78),
            span("q", "s", v.SPAN_ENQUEUE, "PRODUCER", "queue", 85, 86),
            span(
                "j",
                "q",
                v.SPAN_JOB,
                "CONSUMER",
                "queue",
                150,
                190,
                **{
                    v.JOB_ENQUEUED_AT: 85 * MS,
                    v.JOB_FUNC: "latency_lab.service.tasks.track_event",
                    v.JOB_QUEUE: "side-effects",
                },
            ),
            span(
                "jx",
                "j",
                "third_party.call email",
                "CLIENT",
                "third_party",
                151,
                189,
                **{v.THIRD_PARTY_PROVIDER: "email"},
            ),
        ]
    )


def test_self_time_by_kind_adds_up_to_the_request_on_its_path() -> None:
    annotated = traces.annotate(inline_request())
    on_path = annotated[~annotated["off_path"]]

    by_kind = traces.time_by_kind(on_path).set_index("kind")["time_ms"]

    assert by_kind.sum() == 100.0  # the edge span's duration, nothing counted twice
    assert by_kind["database"] == 20.0
    assert by_kind["third_party"] == 50.0  # the HTTP spans inside the call are third-party time
    assert by_kind["queue"] == 1.0


def edge_miss_request() -> pd.DataFrame:
    """``edge_cache`` on and a miss: the edge's cache lookup wraps the whole forwarded request."""
    return traces.span_frame(
        [
            span("e", None, v.SPAN_EDGE, "SERVER", "application", 0, 100),
            span(
                "l", "e", "cache.lookup edge", "INTERNAL", "cache", 1, 99, **{v.CACHE_LAYER: "edge"}
            ),
            span("c", "l", "GET", "CLIENT", "application", 2, 98),
            span("s", "c", "GET /api/leads", "SERVER", "application", 3, 97),
            span("d1", "s", "SELECT", "CLIENT", "database", 4, 34, statement="SELECT 1"),
            span(
                "x",
                "s",
                "third_party.call analytics",
                "CLIENT",
                "third_party",
                40,
                90,
                **{v.THIRD_PARTY_PROVIDER: "analytics"},
            ),
            span("xh", "x", "POST", "CLIENT", "application", 41, 89),
        ]
    )


def test_the_edge_cache_lookup_does_not_turn_the_forwarded_request_into_cache_time() -> None:
    annotated = traces.annotate(edge_miss_request())

    kinds = annotated.set_index("span_id")["effective_kind"]
    by_kind = traces.time_by_kind(annotated).set_index("kind")["time_ms"]

    assert kinds[["d1", "x", "xh", "s", "c"]].tolist() == [
        "database",
        "third_party",
        "third_party",
        "application",
        "application",
    ]
    assert (by_kind["database"], by_kind["third_party"], by_kind["cache"]) == (30.0, 50.0, 2.0)
    assert by_kind.sum() == 100.0


def test_worker_spans_are_background_and_server_spans_do_not_pass_their_kind_down() -> None:
    annotated = traces.annotate(inline_request()).set_index("span_id")

    assert annotated.loc["j", "effective_kind"] == traces.BACKGROUND
    assert annotated.loc["jx", "effective_kind"] == traces.BACKGROUND
    assert annotated.loc["jx", "off_path"]
    assert annotated.loc["xs", "effective_kind"] == "third_party"
    assert annotated.loc["s", "effective_kind"] == "application"
    assert annotated.loc["s", "depth"] == 2


def test_an_edge_hit_is_cache_time() -> None:
    recorder = LabTraces()
    recorder.edge_hit(0, Toggles.all_on())
    rows = [{**_row(s), "attributes": dict(s.attributes or {})} for s in recorder.spans()]
    annotated = traces.annotate(traces.span_frame(rows))

    assert annotated["effective_kind"].tolist() == ["cache"]


def _row(readable: Any) -> dict[str, Any]:
    from latency_lab.telemetry.store import span_row

    row = span_row(readable)
    row.pop("attributes")
    return row


def test_background_jobs_report_queue_wait_and_time_after_the_response() -> None:
    jobs = traces.background_jobs(traces.annotate(inline_request()))

    assert [(j.func, j.queue) for j in jobs] == [("track_event", "side-effects")]
    assert jobs[0].wait_ms == 65.0 and jobs[0].run_ms == 40.0
    assert jobs[0].after_response_ms == 90.0  # ended at 190 ms, the edge answered at 100 ms


def test_waterfall_groups_repeated_statements_and_flags_n_plus_one() -> None:
    recorder = LabTraces()
    recorder.list_request(0, Toggles(), leads=6)
    spans = recorder.spans()
    rows = [{**_row(s), "attributes": dict(s.attributes or {})} for s in spans]
    annotated = traces.annotate(traces.span_frame(rows))
    findings = traces.findings_of(annotated)

    segments = traces.waterfall(annotated, findings)

    per_row = segments.groupby("row").agg(
        label=("label", "first"), count=("count", "first"), n_plus_one=("n_plus_one", "all")
    )
    flagged = per_row[per_row["n_plus_one"]]
    assert flagged["count"].tolist() == [6, 6, 6]
    assert all(label.endswith("\u00d76") for label in flagged["label"])
    assert len(segments) == len(spans)  # every span is drawn, grouped ones as ticks of a row
    owner = segments[segments["relationship"] == "Lead.owner"]
    assert set(owner["fix"]) == {"joinedload(Lead.owner)"}
    shapes = {f.shape for f in findings}
    assert normalize_statement(LAZY["Lead.owner"]) in shapes


def test_summary_frame_says_where_each_configuration_was_measured() -> None:
    def row(config: str, p50: float, statements: float, **extra: Any) -> dict[str, Any]:
        return {
            "config": config,
            "requests": 10,
            "p50_ms": p50,
            "p95_ms": p50,
            "p99_ms": p50,
            "avg_ms": p50,
            "error_rate": 0.0,
            "first_ns": 0,
            "last_ns": 5 * 10**9,
            "avg_db_statements": statements,
            "avg_db_time_ms": 0.0,
            "avg_ext_calls": 0.0,
            "avg_ext_time_ms": 0.0,
            "avg_jobs_enqueued": 0.0,
            "hit_rate_edge": None,
            "hit_rate_redis": None,
            "hit_rate_app": None,
            "n_plus_one_requests": 0,
            "at_edge": 0,
            **extra,
        }

    # The store's front-door rows: a=on went through the edge (nine hits, one miss that cost 3
    # statements); b=on was sent straight to the service; the simulator's requests have no
    # configuration. (Which row of a request is its front door is the store's: test_store_reads.)
    front = [
        row("a=on", 5.0, 0.3, hit_rate_edge=0.9, hit_rate_redis=0.5, at_edge=10),
        row("b=on", 50.0, 301.0),
        row("", 1.0, 0.0),
    ]

    summary = data.summary_frame(front).set_index("config")

    assert summary.loc["a=on", "measured_at"] == "edge"
    assert summary.loc[
        "a=on", ["p50_ms", "statements", "hit_rate_edge", "hit_rate_redis"]
    ].tolist() == [5.0, 0.3, 0.9, 0.5]
    assert summary.loc["b=on", "measured_at"] == "service"
    assert summary.loc["b=on", ["p50_ms", "statements"]].tolist() == [50.0, 301.0]
    assert summary.loc["b=on", "requests_per_s"] == 2.0  # 10 requests over 5 s
    assert "" not in summary.index
    assert list(data.summary_frame([]).columns) == data.SUMMARY_COLUMNS


def test_buckets_keep_charts_to_a_few_hundred_points() -> None:
    assert data.bucket_seconds(300) == 1
    assert data.bucket_seconds(900) == 5
    assert data.bucket_seconds(86_400) == 300
    assert all(
        window / data.bucket_seconds(window) <= data.MAX_BUCKETS
        for window in (300, 900, 3600, 21_600, 86_400)
    )


def test_bucket_frame_keeps_one_point_per_bucket_and_configuration() -> None:
    def bucket(start: int, config: str, statements: float, at_edge: int) -> dict[str, Any]:
        return {
            "bucket_start_ns": start * 10**9,
            "config": config,
            "requests": 5,
            "p50_ms": 10.0,
            "p95_ms": 20.0,
            "avg_ms": 12.0,
            "error_rate": 0.0,
            "first_ns": start * 10**9,
            "avg_db_statements": statements,
            "avg_ext_time_ms": 0.0,
            "hit_rate_edge": None,
            "hit_rate_redis": None,
            "hit_rate_app": None,
            "at_edge": at_edge,
        }

    # Front doors only: a=on went through the edge, b=on straight to the service. The service's
    # rows of a=on's requests are not front doors, so they are not buckets of their own.
    front = [bucket(20, "b=on", 1.0, 0), bucket(10, "a=on", 301.0, 5), bucket(25, "", 0.0, 5)]

    series = data.bucket_frame(front, bucket_s=5)

    assert list(
        zip(
            series["config"], series["bucket_start_ns"] // 10**9, series["measured_at"], strict=True
        )
    ) == [("a=on", 10, "edge"), ("b=on", 20, "service")]
    assert series["requests_per_s"].tolist() == [1.0, 1.0]
    assert list(data.bucket_frame([], bucket_s=5).columns) == data.BUCKET_COLUMNS
