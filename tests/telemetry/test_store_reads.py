"""The trace store's front-door flag and the reads the dashboard asks it for.

One request through the edge leaves two summary rows (the edge's and the service's); one sent
straight to the service leaves one. Exactly one row per request is the front door, decided when
the row is written, so the dashboard's figures are one indexed query. A store written before the
flag existed gets the column (and its index) on ``create()``, set for the rows already there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, set_span_in_context
from sqlalchemy import inspect

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store import TraceStore
from tests.telemetry.factories import MS, RecordingProvider

EDGE = RecordingProvider(service="latency-lab-edge", role="edge")
SERVICE = RecordingProvider(service="latency-lab-service", role="service")


@pytest.fixture
def store(store_url: str) -> Iterator[TraceStore]:
    trace_store = TraceStore(store_url).create()
    yield trace_store
    trace_store.close()


def _request(
    start_ns: int,
    config: str,
    *,
    through_edge: bool,
    duration_ms: float = 10.0,
    statements: int = 3,
    route: str = "/api/leads",
    method: str = "GET",
) -> list[ReadableSpan]:
    """One request's server spans: the edge's (when it went through) and the service's."""
    common = {v.CONFIG_KEY: config, "http.request.method": method, "url.path": route}
    service_context = None
    if through_edge:
        edge = EDGE.tracer.start_span("edge.request", kind=SpanKind.SERVER, start_time=start_ns)
        edge.set_attributes({**common, v.REQ_DB_STATEMENTS: statements})
        service_context = set_span_in_context(edge)
    service = SERVICE.tracer.start_span(
        f"{method} {route}",
        kind=SpanKind.SERVER,
        start_time=start_ns + MS // 10,
        context=service_context,
        attributes={
            **common,
            "http.route": route,
            v.REQ_DB_STATEMENTS: statements,
            v.REQ_EXT_TIME_MS: 2.0 * statements,
            v.REQ_FRONT_DOOR: not through_edge,
        },
    )
    service.end(end_time=start_ns + int((duration_ms - 0.2) * MS))
    if through_edge:
        edge.end(end_time=start_ns + int(duration_ms * MS))
    return [*SERVICE.take(), *EDGE.take()]


def _workshop(store: TraceStore) -> int:
    """a=on: 4 requests through the edge; b=on: 2 sent straight to the service. Returns the
    first request's start."""
    start = time.time_ns() - 60_000 * MS
    spans = []
    for index in range(4):
        spans += _request(start + index * MS, "a=on", through_edge=True, duration_ms=5.0 + index)
    for index in range(2):
        spans += _request(start + (10 + index) * MS, "b=on", through_edge=False, statements=301)
    store.write_spans(spans)
    return start


def test_one_front_door_per_request(store: TraceStore) -> None:
    _workshop(store)

    rows = store.recent_requests(limit=100)
    front = [(row["role"], row["config"]) for row in rows if row["front_door"]]
    assert len(rows) == 10  # 4 x (edge + service) + 2 x service
    assert sorted(front) == [("edge", "a=on")] * 4 + [("service", "b=on")] * 2
    assert len({row["trace_id"] for row in rows if row["front_door"]}) == 6
    only_front = store.recent_requests(limit=100, front_door=True)
    assert {row["trace_id"] for row in only_front} == {r["trace_id"] for r in rows}


def test_front_door_aggregates_count_each_request_once(store: TraceStore) -> None:
    _workshop(store)

    by_config = {row["config"]: row for row in store.aggregate_by_config(front_door=True)}

    assert (by_config["a=on"]["requests"], by_config["a=on"]["at_edge"]) == (4, 4)
    assert (by_config["a=on"]["p50_ms"], by_config["a=on"]["p99_ms"]) == (6.0, 8.0)
    assert (by_config["b=on"]["requests"], by_config["b=on"]["at_edge"]) == (2, 0)
    assert by_config["b=on"]["avg_db_statements"] == 301.0
    everything = {row["config"]: row["requests"] for row in store.aggregate_by_config()}
    assert everything == {"a=on": 8, "b=on": 2}
    at_service = store.aggregate_by_config(role="service")
    assert {row["config"]: row["requests"] for row in at_service} == {"a=on": 4, "b=on": 2}
    buckets = store.aggregate_by_time(3600, front_door=True)
    assert {(b["config"], b["requests"], b["at_edge"]) for b in buckets} == {
        ("a=on", 4, 4),
        ("b=on", 2, 0),
    }


def test_recent_trace_ids_and_their_spans(store: TraceStore) -> None:
    _workshop(store)

    newest = store.recent_trace_ids(3, config="a=on")
    fronts = store.recent_requests(limit=100, config="a=on", front_door=True)
    assert newest == [row["trace_id"] for row in fronts][:3]
    assert store.recent_trace_ids(5, config="b=on", since_ns=time.time_ns()) == []

    spans = store.spans_of_traces(newest, columns=("trace_id", "name", "role"))
    assert len(spans) == 6  # the edge's and the service's span of each
    assert {span["trace_id"] for span in spans} == set(newest)
    assert set(spans[0]) == {"trace_id", "name", "role"}
    [whole, *_] = store.spans_of_traces(newest[:1])
    assert isinstance(whole["attributes"], dict)
    assert store.spans_of_traces([]) == []


def test_costs_by_config_filter_route_and_method(store: TraceStore) -> None:
    start = _workshop(store)
    post = _request(start + 20 * MS, "a=on", through_edge=False, method="POST", statements=9)
    store.write_spans(post)

    costs = store.costs_by_config(route="/api/leads", method="GET", role="service")
    by_config = {row["config"]: row for row in costs}
    assert by_config["a=on"] == {"config": "a=on", "requests": 4, "statements": 3.0, "ext_ms": 6.0}
    assert by_config["b=on"]["statements"] == 301.0
    posts = store.costs_by_config(route="/api/leads", method="POST", since_ns=start)
    assert posts == [{"config": "a=on", "requests": 1, "statements": 9.0, "ext_ms": 18.0}]


def test_insert_rows_for_a_synthetic_store(store: TraceStore) -> None:
    _workshop(store)
    [request] = store.recent_requests(limit=1)
    spans = store.spans_of_traces([request["trace_id"]])
    for row in (request, *spans):
        row.pop("id")
    request.update(toggles="{}", world="{}", n_plus_one=None, trace_id="f" * 32)
    for span in spans:
        span.update(trace_id="f" * 32, attributes="{}")

    store.insert_rows(spans=spans, requests=[request])

    assert store.recent_trace_ids(1, config=request["config"]) == ["f" * 32]
    assert len(store.trace_spans("f" * 32)) == len(spans)


def test_a_store_from_before_the_flag_gets_it(store_url: str) -> None:
    """An older store: ``create()`` adds ``front_door`` and its index, and sets it for the rows
    already there (the edge's rows, and the service's where the edge has none)."""
    old = TraceStore(store_url).create()
    start = _workshop(old)
    with old.engine.begin() as connection:  # back to the tables as they were before the flag
        connection.exec_driver_sql("DROP INDEX ix_requests_front_door_start")
        connection.exec_driver_sql("ALTER TABLE requests DROP COLUMN front_door")
    old.close()

    upgraded = TraceStore(store_url).create()

    inspector = inspect(upgraded.engine)
    assert "front_door" in {column["name"] for column in inspector.get_columns("requests")}
    assert "ix_requests_front_door_start" in {i["name"] for i in inspector.get_indexes("requests")}
    by_config = {r["config"]: r for r in upgraded.aggregate_by_config(front_door=True)}
    assert {c: (r["requests"], r["at_edge"]) for c, r in by_config.items()} == {
        "a=on": (4, 4),
        "b=on": (2, 0),
    }
    upgraded.write_spans(_request(start + 30 * MS, "c=on", through_edge=False))
    assert upgraded.recent_trace_ids(1, config="c=on")
    upgraded.create()  # idempotent
    upgraded.close()
