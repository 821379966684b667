"""The trace store: what goes in comes back, the summaries add up, and it stays bounded."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.nplusone import Finding
from latency_lab.telemetry.store import TraceStore, TraceStoreExporter, normalize_url
from tests.telemetry.factories import (
    MS,
    RecordingProvider,
    RequestShape,
    request_traces,
)


@pytest.fixture
def store(store_url: str) -> Iterator[TraceStore]:
    trace_store = TraceStore(store_url).create()
    yield trace_store
    trace_store.close()


@pytest.fixture
def recording() -> RecordingProvider:
    return RecordingProvider()


def test_request_trace_round_trips(store: TraceStore, recording: RecordingProvider) -> None:
    tracer = recording.tracer
    finding = Finding("n_plus_one_query", "SELECT ? ", "SELECT 1", 100, 12.5, "Lead.owner")
    with tracer.start_as_current_span("GET /api/leads", kind=SpanKind.SERVER) as server:
        server.set_attributes(
            {
                "http.route": "/api/leads",
                "http.method": "GET",
                "http.target": "/api/leads?limit=100",
                "http.status_code": 200,
                v.REQ_DB_STATEMENTS: 301,
                v.REQ_DB_TIME_MS: 250.5,
                v.REQ_EXT_CALLS: 2,
                v.REQ_EXT_TIME_MS: 180.0,
                v.REQ_CACHE_HITS_PREFIX + "redis": 1,
                v.REQ_CACHE_MISSES_PREFIX + "app": 1,
                v.CONFIG_KEY: "eager_loading=off,redis_cache=on",
                v.TOGGLE_PREFIX + "eager_loading": False,
                v.WORLD_PREFIX + "db_rtt_ms": 1.5,
                v.REQ_N_PLUS_ONE: Finding.dumps([finding]),
            }
        )
        with tracer.start_as_current_span("SELECT app.db", kind=SpanKind.CLIENT) as query:
            query.set_attribute("db.statement", "SELECT * FROM leads")
        with tracer.start_as_current_span(v.cache_span_name(v.CacheLayer.REDIS)) as lookup:
            lookup.set_attributes({v.CACHE_LAYER: "redis", v.CACHE_OUTCOME: "hit"})
        with tracer.start_as_current_span(v.third_party_span_name(v.Provider.EMAIL)) as call:
            call.set_attributes({v.THIRD_PARTY_PROVIDER: "email", v.THIRD_PARTY_MODE: "inline"})
    store.write_spans(recording.take())

    [request] = store.recent_requests()
    assert request["route"] == "/api/leads"
    assert (request["method"], request["target"], request["status"]) == (
        "GET",
        "/api/leads?limit=100",
        200,
    )
    assert (request["db_statements"], request["db_time_ms"]) == (301, 250.5)
    assert (request["ext_calls"], request["ext_time_ms"]) == (2, 180.0)
    assert (
        request["cache_hits_redis"],
        request["cache_misses_app"],
        request["cache_hits_edge"],
    ) == (
        1,
        1,
        0,
    )
    assert request["config"] == "eager_loading=off,redis_cache=on"
    assert request["toggles"] == {"eager_loading": False}
    assert request["world"] == {"db_rtt_ms": 1.5}
    assert Finding.loads(json.dumps(request["n_plus_one"])) == [finding]
    assert request["n_plus_one_count"] == 1
    assert (request["service"], request["role"]) == ("latency-lab-service", "service")

    spans = store.trace_spans(request["trace_id"])
    assert [(s["name"], s["lab_kind"]) for s in spans] == [
        ("GET /api/leads", "application"),
        ("SELECT app.db", "database"),
        ("cache.lookup redis", "cache"),
        ("third_party.call email", "third_party"),
    ]
    root = spans[0]
    assert root["span_id"] == request["span_id"] and root["parent_span_id"] is None
    assert {s["parent_span_id"] for s in spans[1:]} == {root["span_id"]}
    assert spans[1]["statement"] == "SELECT * FROM leads"
    assert spans[2]["attributes"] == {v.CACHE_LAYER: "redis", v.CACHE_OUTCOME: "hit"}
    assert root["duration_ms"] == pytest.approx((root["end_ns"] - root["start_ns"]) / 1e6)
    assert store.counts() == {"spans": 4, "requests": 1}


def test_only_server_spans_become_requests(store: TraceStore, recording: RecordingProvider) -> None:
    with recording.tracer.start_as_current_span("rq.job", kind=SpanKind.CONSUMER):
        pass
    with recording.tracer.start_as_current_span("edge.request", kind=SpanKind.SERVER) as edge:
        edge.set_attribute("url.path", "/static/app.js")
    store.write_spans(recording.take())
    [request] = store.recent_requests()
    assert (request["route"], request["db_statements"], request["config"]) == (
        "/static/app.js",
        0,
        "",
    )
    assert store.counts() == {"spans": 2, "requests": 1}


def test_aggregate_by_config(store: TraceStore, recording: RecordingProvider) -> None:
    before = [
        RequestShape(duration_ms=10.0 * i, statements=5, misses={"redis": 1}, status=200)
        for i in range(1, 101)
    ]
    after = [
        RequestShape(
            config="eager_loading=on",
            duration_ms=float(i),
            statements=1,
            hits={"redis": 1} if i % 4 else {},
            misses={} if i % 4 else {"redis": 1},
            status=500 if i % 10 == 0 else 200,
        )
        for i in range(1, 101)
    ]
    store.write_spans(request_traces(recording, before + after))

    slow, fast = store.aggregate_by_config()
    assert (slow["config"], fast["config"]) == ("eager_loading=off", "eager_loading=on")
    assert (slow["p50_ms"], slow["p95_ms"], slow["p99_ms"]) == (500.0, 950.0, 990.0)
    assert (fast["p50_ms"], fast["p95_ms"], fast["p99_ms"]) == (50.0, 95.0, 99.0)
    assert (slow["requests"], slow["avg_db_statements"], slow["avg_ms"]) == (100, 5.0, 505.0)
    assert (slow["hit_rate_redis"], fast["hit_rate_redis"]) == (0.0, 0.75)
    assert fast["hit_rate_app"] is None  # no lookups on that layer: no rate, not 0 %
    assert (slow["error_rate"], fast["error_rate"]) == (0.0, 0.1)
    assert fast["first_ns"] < fast["last_ns"]

    since = store.aggregate_by_config(since_ns=fast["first_ns"] + 50 * MS)
    assert [(row["config"], row["requests"]) for row in since] == [("eager_loading=on", 50)]
    assert store.aggregate_by_config(service="another-service") == []
    assert store.aggregate_by_config(route="/api/leads")[0]["requests"] == 100


def test_aggregate_by_time(store: TraceStore, recording: RecordingProvider) -> None:
    shapes = [RequestShape(duration_ms=float(i % 10 + 1)) for i in range(40)]
    store.write_spans(request_traces(recording, shapes))  # 40 requests, 1 ms apart
    buckets = store.aggregate_by_time(0.010)
    assert sum(bucket["requests"] for bucket in buckets) == 40
    assert all(bucket["requests"] == 10 for bucket in buckets[1:-1])
    assert [b["bucket_start_ns"] for b in buckets] == sorted(b["bucket_start_ns"] for b in buckets)
    full = buckets[1]
    assert (full["avg_ms"], full["p50_ms"], full["avg_db_statements"]) == (5.5, 5.0, 3.0)


def test_recent_and_slowest_requests(store: TraceStore, recording: RecordingProvider) -> None:
    shapes = [RequestShape(route=f"/r{i}", duration_ms=float(i)) for i in range(1, 21)]
    store.write_spans(request_traces(recording, shapes))
    assert [r["route"] for r in store.recent_requests(3)] == ["/r20", "/r19", "/r18"]
    assert [r["route"] for r in store.recent_requests(5, route="/r7")] == ["/r7"]
    assert [r["duration_ms"] for r in store.slowest_requests(2)] == [20.0, 19.0]


def test_retention_keeps_the_store_bounded(store: TraceStore, recording: RecordingProvider) -> None:
    spans = request_traces(recording, [RequestShape(statements=4)] * 200)  # 1000 spans
    store.write_spans(spans)
    newest = max(s["start_ns"] for s in store.recent_requests(1))

    deleted = store.apply_retention(max_age_s=None, max_spans=300)
    counts = store.counts()
    assert counts["spans"] <= 300 and deleted == 1000 - counts["spans"]
    assert counts["requests"] <= 60
    assert store.recent_requests(1)[0]["start_ns"] == newest  # the newest are kept
    assert store.apply_retention(max_age_s=None, max_spans=300) == 0

    assert store.apply_retention(max_age_s=3600.0, max_spans=None) == 0  # a minute old
    assert store.apply_retention(max_age_s=30.0, max_spans=None) == counts["spans"]
    assert store.counts() == {"spans": 0, "requests": 0}


def test_exporter_writes_and_reports_process_stats(store_url: str) -> None:
    recording = RecordingProvider(service="latency-lab-worker", role="worker")
    exporter = TraceStoreExporter(store_url)
    exporter.set_stats_source(lambda: (40, 3))
    spans = request_traces(recording, [RequestShape()] * 10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.set_stats_source(lambda: (80, 7))
    assert exporter.export(spans[:1]) == SpanExportResult.SUCCESS
    exporter.shutdown()

    store = TraceStore(store_url)
    assert store.counts() == {"spans": 41, "requests": 10}
    [process] = store.process_stats()
    assert (process["service"], process["role"], process["exported"], process["dropped"]) == (
        "latency-lab-worker",
        "worker",
        80,
        7,
    )
    assert store.dropped_spans() == 7
    store.close()


def test_exporter_trims_each_time_it_has_written_a_twentieth_of_the_cap(
    sqlite_store_url: str,
) -> None:
    recording = RecordingProvider()
    exporter = TraceStoreExporter(
        sqlite_store_url, retention_max_age_s=None, retention_max_spans=400
    )
    store = TraceStore(sqlite_store_url)
    most = 0
    for _ in range(30):
        exporter.export(request_traces(recording, [RequestShape(statements=9)] * 2))  # 20 spans
        most = max(most, store.counts()["spans"])
    exporter.shutdown()

    # 600 spans written, 20 at a time: trimmed whenever 20 (5 % of 400) had been written, so the
    # store never held more than the cap plus one export.
    assert most <= 400 + 20
    assert store.counts()["spans"] <= 400
    store.close()


def test_exporter_after_shutdown_fails_without_raising(sqlite_store_url: str) -> None:
    exporter = TraceStoreExporter(sqlite_store_url)
    spans = request_traces(RecordingProvider(), [RequestShape()])
    exporter.shutdown()
    assert exporter.export(spans) == SpanExportResult.FAILURE
    assert exporter.force_flush() is True


def test_exporter_to_unreachable_database_fails_without_raising() -> None:
    exporter = TraceStoreExporter("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    spans = request_traces(RecordingProvider(), [RequestShape()])
    assert exporter.export(spans) == SpanExportResult.FAILURE
    exporter.shutdown()


def _export_in_child(exporter: TraceStoreExporter, results: multiprocessing.Queue[str]) -> None:
    spans = request_traces(RecordingProvider(service="child"), [RequestShape(statements=0)])
    results.put(exporter.export(spans).name)


def test_exporter_built_before_fork_writes_from_the_child(sqlite_store_url: str) -> None:
    """A gunicorn master's exporter, inherited by a worker: the worker opens its own engine."""
    exporter = TraceStoreExporter(sqlite_store_url)
    parent_spans = request_traces(RecordingProvider(service="parent"), [RequestShape()])
    assert exporter.export(parent_spans) == SpanExportResult.SUCCESS  # engine made in the parent
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_export_in_child, args=(exporter, results))
    child.start()
    child.join(timeout=30)
    assert results.get(timeout=5) == "SUCCESS"
    assert exporter.export(parent_spans) == SpanExportResult.SUCCESS  # the parent is unharmed
    exporter.shutdown()
    store = TraceStore(sqlite_store_url)
    assert {p["service"] for p in store.process_stats()} == {"parent", "child"}
    assert store.counts()["requests"] == 3


def test_store_work_is_never_traced(sqlite_store_url: str) -> None:
    """Even on an instrumented engine, in an instrumented process, the store makes no spans."""
    recording = RecordingProvider(service="instrumented-process")
    store = TraceStore(sqlite_store_url)
    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        pytest.skip("SQLAlchemy is already instrumented globally in this process")
    instrumentor.instrument(engine=store.engine, tracer_provider=recording.provider)
    try:
        store.create()
        spans = request_traces(RecordingProvider(), [RequestShape()] * 3)
        recording.take()
        store.write_spans(spans)
        store.record_process_stats(service="s", role="r", exported=1, dropped=0)
        store.aggregate_by_config()
        store.recent_requests()
        store.apply_retention(max_age_s=1.0, max_spans=10)
        assert recording.take() == []
        with store.engine.connect() as connection:  # the same engine, outside the store's API
            connection.execute(text("SELECT count(*) FROM spans"))
        assert any(v.db_statement(s.attributes) for s in recording.take())
    finally:
        instrumentor.uninstrument()
        store.close()


def test_sqlite_store_is_set_up_for_many_writers(sqlite_store_url: str) -> None:
    store = TraceStore(sqlite_store_url).create()
    with store.engine.connect() as connection:
        pragmas = [
            connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "synchronous")
        ]
    assert pragmas == ["wal", 5000, 1]  # synchronous=1 is NORMAL
    store.create()  # idempotent
    store.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@db:5432/lab", "postgresql+psycopg://u@db:5432/lab"),
        ("postgres://u@db/lab", "postgresql+psycopg://u@db/lab"),
        ("postgresql+psycopg://u@db/lab", "postgresql+psycopg://u@db/lab"),
        ("sqlite:////var/lab/traces.db", "sqlite:////var/lab/traces.db"),
        ("/var/lab/traces.db", "sqlite:////var/lab/traces.db"),
    ],
)
def test_store_urls(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


def test_exported_spans_survive_a_real_provider(sqlite_store_url: str) -> None:
    """End to end through an SDK provider, the way configure() wires the exporter."""
    recording = RecordingProvider()
    exporter = TraceStoreExporter(sqlite_store_url)
    recording.provider.add_span_processor(SimpleSpanProcessor(exporter))
    with recording.tracer.start_as_current_span("GET /healthz", kind=SpanKind.SERVER):
        time.sleep(0.001)
    recording.provider.shutdown()
    [request] = TraceStore(sqlite_store_url).recent_requests()
    assert request["route"] == "GET /healthz" and request["duration_ms"] >= 1.0
    assert isinstance(recording.exporter, InMemorySpanExporter)
