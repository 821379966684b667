"""The trace store: every process's finished spans, and one summary row per request, in SQL.

One SQLite file by default (``sqlite:////abs/path/traces.db``), or PostgreSQL
(``postgresql://user@host/db``; the ``psycopg`` driver is chosen for plain ``postgresql://`` and
``postgres://`` URLs). Three tables (:mod:`.schema`):

* ``spans``: every span, with its attributes as JSON and its
  :class:`~latency_lab.telemetry.vocabulary.SpanKindLabel` (``lab_kind``) and SQL statement pulled
  out for the waterfall views;
* ``requests``: one row per ``SERVER`` span (service, edge, any process), made from the
  ``lab.request.*`` accounting attributes (:mod:`.rows`): statements, database time, third-party
  time, cache hits and misses per layer, the configuration string, toggles, world, N+1 findings,
  and ``front_door``, set on the one row per request where it entered the lab (the edge's, or the
  service's when the request did not come through the edge). The dashboard's aggregations read
  only this table, so they stay fast on a million spans;
* ``process_stats``: per process (host, pid, service), how many spans it exported and dropped.

Writers are many processes at once (gunicorn and RQ workers, the edge, the simulator): SQLite
runs in WAL mode with a busy timeout, and every write is one ``BEGIN IMMEDIATE`` transaction
(spans and their summary rows together), so a reader sees whole batches or nothing.

The store must never trace itself: its engine is never instrumented, and every operation runs
with OpenTelemetry instrumentation suppressed, because the SQLAlchemy instrumentation also
patches ``Engine.connect`` for every engine in the process.

The store owns every query over its tables (:class:`TraceStore` and :mod:`.queries`): the
dashboard, the bench and the tests ask it. Usage::

    store = TraceStore(url).create()
    store.aggregate_by_config(since_ns=time.time_ns() - 3_600 * 10**9, front_door=True)

and, in a process that records spans, :class:`TraceStoreExporter` behind a batch processor.
"""

from latency_lab.telemetry.store.exporter import StatsSource, TraceStoreExporter
from latency_lab.telemetry.store.rows import request_row, span_row
from latency_lab.telemetry.store.schema import (
    create_store_engine,
    metadata,
    normalize_url,
    process_stats_table,
    profiles_table,
    requests_table,
    spans_table,
)
from latency_lab.telemetry.store.trace_store import TraceStore

__all__ = [
    "StatsSource",
    "TraceStore",
    "TraceStoreExporter",
    "create_store_engine",
    "metadata",
    "normalize_url",
    "process_stats_table",
    "profiles_table",
    "request_row",
    "requests_table",
    "span_row",
    "spans_table",
]
