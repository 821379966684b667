"""The lab's own costs, each measured side by side in one run.

* telemetry overhead: two identical service processes, one with ``OTEL_SDK_DISABLED=true``,
  served the same requests in alternating batches on the optimized path;
* trace-store ingest: several writer processes exporting spans at once;
* dashboard queries: the overview queries on a store filled to the planned size;
* memory: resident memory of every process of the embedded lab.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from latency_lab.core.toggles import TOGGLE_HEADER, Toggles
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.percentiles import nearest_rank
from latency_lab.telemetry.store import TraceStore

OPTIMIZED = Toggles(eager_loading=True, redis_cache=True, app_cache=True, async_offload=True)
BATCH = 10
INGEST_BATCH = 512


# --- telemetry overhead -------------------------------------------------------------------------
def telemetry_overhead(urls: dict[str, str], requests: int) -> dict[str, Any]:
    """p50 of ``GET /api/leads?limit=100`` (all on) with and without instrumentation."""
    p50, each = alternating_p50(urls, requests)
    on, off = p50["instrumented"], p50["uninstrumented"]
    return {
        "p50_ms_instrumented": round(on, 3),
        "p50_ms_uninstrumented": round(off, 3),
        "overhead_pct": round((on / off - 1) * 100, 1) if off else None,
        "requests_each": each,
    }


def profiling_overhead(urls: dict[str, str], requests: int) -> dict[str, Any]:
    """What an unprofiled request pays for profiling being possible: the same requests (none
    profiled) with sampling enabled (``LAB_PROFILE_EVERY`` far beyond the run) and disabled."""
    p50, each = alternating_p50(urls, requests)
    on, off = p50["sampling enabled"], p50["sampling disabled"]
    return {
        "p50_ms_enabled": round(on, 3),
        "p50_ms_disabled": round(off, 3),
        "difference_pct": round((on / off - 1) * 100, 1) if off else None,
        "requests_each": each,
    }


def alternating_p50(urls: dict[str, str], requests: int) -> tuple[dict[str, float], int]:
    """p50 (ms) of the optimized lead list at each URL, in alternating batches so that noise on
    the machine hits all alike; and how many requests each got."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    headers = {TOGGLE_HEADER: OPTIMIZED.label()}
    with httpx.Client(headers=headers, timeout=30) as client:
        for url in urls.values():  # warm all: caches, connections, pools
            for _ in range(BATCH):
                client.get(f"{url}/api/leads?limit=100")
        for _ in range(max(1, requests // BATCH)):
            for name, url in urls.items():
                for _ in range(BATCH):
                    started = time.perf_counter()
                    client.get(f"{url}/api/leads?limit=100").raise_for_status()
                    samples[name].append((time.perf_counter() - started) * 1000)
    p50 = {name: nearest_rank(values, 50) or 0.0 for name, values in samples.items()}
    return p50, min(len(values) for values in samples.values())


# --- trace-store ingest ---------------------------------------------------------------------------
def _ingest_writer(store_url: str, spans: int, ready: Any, start: Any, results: Any) -> None:
    """Make ``spans`` request-shaped spans, then export them in batches once all writers are
    ready: the time measured is the store's, with every writer writing at once."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from latency_lab.telemetry.store import TraceStoreExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-writer"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    while len(memory.get_finished_spans()) < spans:
        with tracer.start_as_current_span("GET /api/leads", kind=SpanKind.SERVER):
            for _ in range(9):
                with tracer.start_as_current_span(
                    "SELECT",
                    attributes={"db.statement": "SELECT users.id FROM users WHERE users.id = ?"},
                ):
                    pass
    finished = list(memory.get_finished_spans())[:spans]
    exporter = TraceStoreExporter(store_url)
    ready.put(len(finished))
    start.wait()
    failed = 0
    for offset in range(0, len(finished), INGEST_BATCH):
        result = exporter.export(finished[offset : offset + INGEST_BATCH])
        failed += 0 if result.name == "SUCCESS" else len(finished[offset : offset + INGEST_BATCH])
    exporter.shutdown()
    results.put((len(finished) - failed, failed))


def trace_store_ingest(writers: int, spans_per_writer: int) -> dict[str, Any]:
    """Spans per second that ``writers`` processes writing at once sustain into one SQLite store
    (batches of 512, as the lab's batch processor sends them), and how many writes failed."""
    with tempfile.TemporaryDirectory(prefix="lab-ingest-") as workdir:
        url = f"sqlite:///{Path(workdir) / 'traces.db'}"
        TraceStore(url).create().close()
        context = multiprocessing.get_context("spawn")
        ready, results, start = context.Queue(), context.Queue(), context.Event()
        processes = [
            context.Process(
                target=_ingest_writer, args=(url, spans_per_writer, ready, start, results)
            )
            for _ in range(writers)
        ]
        for process in processes:
            process.start()
        for _ in processes:  # every writer has built its spans: now they all write at once
            ready.get(timeout=600)
        started = time.perf_counter()
        start.set()
        totals = [results.get(timeout=600) for _ in processes]
        elapsed = time.perf_counter() - started
        for process in processes:
            process.join(timeout=30)
        stored = TraceStore(url).counts()["spans"]
    written = sum(t[0] for t in totals)
    return {
        "writers": writers,
        "spans_sent": writers * spans_per_writer,
        "stored": stored,
        "failed": sum(t[1] for t in totals),
        "seconds": round(elapsed, 2),
        "spans_per_s": round(written / elapsed) if elapsed else None,
    }


# --- dashboard queries on a large store ----------------------------------------------------------
CONFIGS = [
    Toggles().label(),
    Toggles(eager_loading=True).label(),
    Toggles.all_on().label(),
    Toggles(eager_loading=True, async_offload=True).label(),
]


def fill_store(
    store: TraceStore,
    *,
    requests: int,
    spans_per_request: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Synthetic but well-formed rows: one summary row and N spans per request, over a day."""
    rng = random.Random(7)
    now = time.time_ns()
    chunk = 2_000
    for start in range(0, requests, chunk):
        request_rows, span_rows = [], []
        for index in range(start, min(start + chunk, requests)):
            request_rows.append(_request_row(rng, index, now))
            span_rows += _span_rows(request_rows[-1], spans_per_request)
        store.insert_rows(spans=span_rows, requests=request_rows)
        if progress is not None:
            progress(len(request_rows))


def _request_row(rng: random.Random, index: int, now_ns: int) -> dict[str, Any]:
    config = CONFIGS[(index // 500) % len(CONFIGS)]
    statements = 301 if config == CONFIGS[0] else 1
    hits = int(config == CONFIGS[2])
    counters = {
        f"cache_{o}_{layer}": 0 for layer in ("edge", "redis", "app") for o in ("hits", "misses")
    }
    counters["cache_hits_redis"] = hits
    return {
        "trace_id": f"{index:032x}",
        "span_id": f"{index:016x}",
        "service": "bench",
        "role": "service",
        "route": "/api/leads",
        "method": "GET",
        "target": "/api/leads",
        "status": 200,
        "start_ns": now_ns - (86_400 - index * 86_400 // 100_000) * 10**9,
        "duration_ms": rng.lognormvariate(3 if statements == 1 else 6.2, 0.3),
        "db_time_ms": 1.0,
        "ext_time_ms": 0.0,
        "db_statements": statements,
        "ext_calls": 0,
        "jobs_enqueued": 1,
        **counters,
        "config": config,
        "toggles": "{}",
        "world": "{}",
        "n_plus_one": None,
        "n_plus_one_count": 0,
        "front_door": True,  # sent straight to the service
    }


def _span_rows(request: dict[str, Any], count: int) -> list[dict[str, Any]]:
    rows = []
    for number in range(count):
        server = number == 0
        rows.append(
            {
                "trace_id": request["trace_id"],
                "span_id": f"{number:04x}{request['span_id'][4:]}",
                "parent_span_id": None if server else request["span_id"],
                "name": "GET /api/leads" if server else "SELECT",
                "kind": "SERVER" if server else "CLIENT",
                "service": "bench",
                "role": "service",
                "start_ns": request["start_ns"],
                "end_ns": request["start_ns"] + 1000,
                "duration_ms": request["duration_ms"] if server else 0.5,
                "status": "UNSET",
                "lab_kind": v.SpanKindLabel.APPLICATION.value
                if server
                else v.SpanKindLabel.DATABASE.value,
                "statement": None if server else "SELECT users.id FROM users WHERE users.id = ?",
                "attributes": json.dumps({}),
            }
        )
    return rows


def dashboard_queries(store: TraceStore) -> dict[str, float]:
    """Milliseconds for each overview query the dashboard runs (front doors, as it reads them)."""
    ten_minutes_ago = time.time_ns() - 600 * 10**9
    hour_ago = time.time_ns() - 3600 * 10**9
    queries: dict[str, Callable[[], object]] = {
        "aggregate_by_config (last hour)": lambda: store.aggregate_by_config(
            since_ns=hour_ago, front_door=True
        ),
        "aggregate_by_config (all)": lambda: store.aggregate_by_config(front_door=True),
        "aggregate_by_time 10 s (last 10 min)": lambda: store.aggregate_by_time(
            10, since_ns=ten_minutes_ago, front_door=True
        ),
        "aggregate_by_time 60 s (last hour)": lambda: store.aggregate_by_time(
            60, since_ns=hour_ago, front_door=True
        ),
        "recent_requests 200": lambda: store.recent_requests(200),
        "slowest_requests 20 (last hour)": lambda: store.slowest_requests(20, hour_ago),
        "trace_spans": lambda: store.trace_spans(f"{42:032x}"),
        "counts": store.counts,
        "dropped_spans": store.dropped_spans,
    }
    timings = {}
    for name, query in queries.items():
        started = time.perf_counter()
        query()
        timings[name] = round((time.perf_counter() - started) * 1000, 1)
    return timings


def store_at_scale(
    requests: int, spans_per_request: int, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lab-store-") as workdir:
        store = TraceStore(f"sqlite:///{Path(workdir) / 'traces.db'}").create()
        fill_store(store, requests=requests, spans_per_request=spans_per_request, progress=progress)
        counts = store.counts()
        timings = dashboard_queries(store)
        store.close()
    return {"spans": counts["spans"], "requests": counts["requests"], "query_ms": timings}
