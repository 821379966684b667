"""The trace store: every process's finished spans, and one summary row per request, in SQL.

One SQLite file by default (``sqlite:////abs/path/traces.db``), or PostgreSQL
(``postgresql://user@host/db``; the ``psycopg`` driver is chosen for plain ``postgresql://`` and
``postgres://`` URLs). Three tables:

* ``spans``: every span, with its attributes as JSON and its
  :class:`~latency_lab.telemetry.vocabulary. SpanKindLabel` (``lab_kind``) and SQL statement pulled
  out for the waterfall views;
* ``requests``: one row per ``SERVER`` span (service, edge, any process), made from the
  ``lab.request.*`` accounting attributes: statements, database time, third-party time, cache
  hits and misses per layer, the configuration string, toggles, world and N+1 findings. The
  dashboard's aggregations read only this table, so they stay fast on a million spans;
* ``process_stats``: per process (host, pid, service), how many spans it exported and dropped.

Writers are many processes at once (gunicorn and RQ workers, the edge, the simulator): SQLite
runs in WAL mode with a busy timeout, and every write is one ``BEGIN IMMEDIATE`` transaction
(spans and their summary rows together), so a reader sees whole batches or nothing.

The store must never trace itself: its engine is never instrumented, and every operation runs
with OpenTelemetry instrumentation suppressed, because the SQLAlchemy instrumentation also
patches ``Engine.connect`` for every engine in the process.

Usage::

    store = TraceStore(url).create()
    store.aggregate_by_config(since_ns=time.time_ns() - 3_600 * 10**9)

and, in a process that records spans, :class:`TraceStoreExporter` behind a batch processor.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.percentiles import nearest_ranks

log = logging.getLogger(__name__)

StatsSource = Callable[[], tuple[int, int]]
"""Returns ``(exported, dropped)`` for this process, e.g. from the batch processor's counters."""

_LAYERS = tuple(layer.value for layer in v.CacheLayer)
_AVERAGED = ("db_statements", "db_time_ms", "ext_calls", "ext_time_ms", "jobs_enqueued")
_DELETE_CHUNK = 10_000
_WRITE_ATTEMPTS = 3
_Id = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid

metadata = MetaData()

spans_table = Table(
    "spans",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("parent_span_id", String(16)),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("service", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status", String(8), nullable=False),
    Column("lab_kind", String(16), nullable=False),
    Column("statement", Text),
    Column("attributes", Text, nullable=False),
    Index("ix_spans_trace_id", "trace_id"),
    Index("ix_spans_start_ns", "start_ns"),
)

_request_counters = [
    "db_statements",
    "ext_calls",
    "jobs_enqueued",
    *(f"cache_{outcome}_{layer}" for layer in _LAYERS for outcome in ("hits", "misses")),
]

requests_table = Table(
    "requests",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("service", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("method", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("status", Integer),
    Column("start_ns", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("db_time_ms", Float, nullable=False),
    Column("ext_time_ms", Float, nullable=False),
    *(Column(name, Integer, nullable=False) for name in _request_counters),
    Column("config", Text, nullable=False),
    Column("toggles", Text, nullable=False),
    Column("world", Text, nullable=False),
    Column("n_plus_one", Text),
    Column("n_plus_one_count", Integer, nullable=False),
    Index("ix_requests_start_ns", "start_ns"),
    Index("ix_requests_config_start", "config", "start_ns"),
    Index("ix_requests_service_start", "service", "start_ns"),
    Index("ix_requests_trace_id", "trace_id"),
    Index("ix_requests_duration", "duration_ms"),
)

process_stats_table = Table(
    "process_stats",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("service", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("exported", BigInteger, nullable=False),
    Column("dropped", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    UniqueConstraint("host", "pid", "service", name="uq_process_stats_process"),
)


# --- engine --------------------------------------------------------------------------------------
def normalize_url(url: str) -> URL:
    """A SQLAlchemy URL for the store: ``postgresql://`` gets psycopg 3, a bare path is SQLite."""
    if "://" not in url:
        return make_url(f"sqlite:///{Path(url).expanduser().resolve()}")
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_store_engine(url: str) -> Engine:
    """The store's own engine; never pass it to an instrumentor."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    in_memory = parsed.database in (None, "", ":memory:")
    if in_memory:
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 5.0})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Leave transactions to _sqlite_on_begin: pysqlite's implicit BEGIN is always DEFERRED, and a
    # deferred writer that has to upgrade its lock fails at once instead of waiting its turn.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def _untraced() -> Iterator[None]:
    """Suppress OpenTelemetry instrumentation: the store's own work is never a span."""
    with suppress_instrumentation():
        yield


# --- rows from spans -----------------------------------------------------------------------------
def span_row(span: ReadableSpan) -> dict[str, Any]:
    """The ``spans`` row of one finished span."""
    attributes = dict(span.attributes or {})
    resource = span.resource.attributes
    start_ns = span.start_time or 0
    end_ns = span.end_time or start_ns
    context = span.context
    return {
        "trace_id": format(context.trace_id, "032x") if context else "0" * 32,
        "span_id": format(context.span_id, "016x") if context else "0" * 16,
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": str(resource.get("service.name", "unknown")),
        "role": str(resource.get(v.PROCESS_ROLE, "")),
        "start_ns": start_ns,
        "end_ns": end_ns,
        "duration_ms": (end_ns - start_ns) / 1e6,
        "status": span.status.status_code.name,
        "lab_kind": v.kind_of(span.name, attributes).value,
        "statement": v.db_statement(attributes),
        "attributes": json.dumps(attributes, default=str),
    }


def request_row(span: ReadableSpan, row: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``requests`` summary row of a ``SERVER`` span, or ``None`` for any other span."""
    if span.kind != SpanKind.SERVER:
        return None
    base = row if row is not None else span_row(span)
    attributes = span.attributes or {}
    target = v.first_attribute(attributes, v.HTTP_TARGET_KEYS)
    route = v.first_attribute(attributes, v.HTTP_ROUTE_KEYS) or target or span.name
    n_plus_one = attributes.get(v.REQ_N_PLUS_ONE)
    counters = {
        "db_statements": _int(attributes.get(v.REQ_DB_STATEMENTS)),
        "ext_calls": _int(attributes.get(v.REQ_EXT_CALLS)),
        "jobs_enqueued": _int(attributes.get(v.REQ_JOBS_ENQUEUED)),
    }
    for layer in _LAYERS:
        counters[f"cache_hits_{layer}"] = _int(attributes.get(v.REQ_CACHE_HITS_PREFIX + layer))
        counters[f"cache_misses_{layer}"] = _int(attributes.get(v.REQ_CACHE_MISSES_PREFIX + layer))
    return {
        **{key: base[key] for key in ("trace_id", "span_id", "service", "role", "start_ns")},
        "duration_ms": base["duration_ms"],
        "route": str(route),
        "method": str(v.first_attribute(attributes, v.HTTP_METHOD_KEYS) or ""),
        "target": str(target or ""),
        "status": v.http_status(attributes),
        "db_time_ms": _float(attributes.get(v.REQ_DB_TIME_MS)),
        "ext_time_ms": _float(attributes.get(v.REQ_EXT_TIME_MS)),
        **counters,
        "config": str(attributes.get(v.CONFIG_KEY) or ""),
        "toggles": json.dumps(_prefixed(attributes, v.TOGGLE_PREFIX), default=str),
        "world": json.dumps(_prefixed(attributes, v.WORLD_PREFIX), default=str),
        "n_plus_one": str(n_plus_one) if n_plus_one else None,
        "n_plus_one_count": _finding_count(n_plus_one),
    }


def _prefixed(attributes: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        key[len(prefix) :]: value for key, value in attributes.items() if key.startswith(prefix)
    }


def _finding_count(raw: Any) -> int:
    if not raw:
        return 0
    try:
        findings = json.loads(str(raw))
    except ValueError:
        return 0
    return len(findings) if isinstance(findings, list) else 0


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _float(value: Any) -> float:
    return float(value) if value is not None else 0.0


# --- the store -------------------------------------------------------------------------------
class TraceStore:
    """Spans and request summaries in SQL: writes from exporters, reads for the dashboard."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_store_engine(url)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._reader = (
            self.engine.execution_options(isolation_level="REPEATABLE READ")
            if self.engine.dialect.name == "postgresql"
            else self.engine
        )

    def create(self) -> TraceStore:
        """Create the tables if missing; safe when several processes start at once."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with _untraced():
                    metadata.create_all(self._writer, checkfirst=True)
                return self
            except DBAPIError:
                # Another process created the same table between our check and our CREATE.
                if attempt == _WRITE_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
        return self

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _untraced(), self._writer.begin() as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _untraced(), self._reader.connect() as connection:
            yield connection

    # --- writes ----------------------------------------------------------------------------
    def write_spans(self, spans: Sequence[ReadableSpan]) -> None:
        """Insert spans and their request summaries in one transaction."""
        span_rows, request_rows = [], []
        for span in spans:
            row = span_row(span)
            span_rows.append(row)
            summary = request_row(span, row)
            if summary is not None:
                request_rows.append(summary)
        if not span_rows:
            return
        with self._write() as connection:
            connection.execute(insert(spans_table), span_rows)
            if request_rows:
                connection.execute(insert(requests_table), request_rows)

    def record_process_stats(
        self,
        *,
        service: str,
        role: str,
        exported: int,
        dropped: int,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        """Upsert this process's export counters (keyed by host, pid and service)."""
        row = {
            "service": service,
            "role": role,
            "host": host or socket.gethostname(),
            "pid": pid if pid is not None else os.getpid(),
            "exported": exported,
            "dropped": dropped,
            "updated_ns": time.time_ns(),
        }
        with self._write() as connection:
            _upsert_process_stats(connection, row)

    def apply_retention(self, *, max_age_s: float | None, max_spans: int | None) -> int:
        """Delete the oldest spans and requests beyond an age or a span count; spans deleted."""
        cutoff = self._retention_cutoff(max_age_s, max_spans)
        if cutoff is None:
            return 0
        deleted = self._delete_older(spans_table, cutoff)
        self._delete_older(requests_table, cutoff)
        return deleted

    def _retention_cutoff(self, max_age_s: float | None, max_spans: int | None) -> int | None:
        cutoffs = []
        if max_age_s is not None:
            cutoffs.append(time.time_ns() - int(max_age_s * 1e9))
        if max_spans is not None:
            newest_too_many = (
                select(spans_table.c.start_ns)
                .order_by(spans_table.c.start_ns.desc())
                .offset(max_spans)
                .limit(1)
            )
            with self._read() as connection:
                start_ns = connection.execute(newest_too_many).scalar()
            if start_ns is not None:
                cutoffs.append(int(start_ns) + 1)
        return max(cutoffs) if cutoffs else None

    def _delete_older(self, table: Table, cutoff_ns: int) -> int:
        """Delete rows started before ``cutoff_ns`` in chunks, letting other writers in between."""
        doomed = select(table.c.id).where(table.c.start_ns < cutoff_ns).limit(_DELETE_CHUNK)
        deleted = 0
        while True:
            with self._write() as connection:
                count = connection.execute(delete(table).where(table.c.id.in_(doomed))).rowcount
            deleted += count
            if count < _DELETE_CHUNK:
                return deleted

    # --- reads -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows in ``spans`` and ``requests``, read from one snapshot."""
        both = select(
            select(func.count()).select_from(spans_table).scalar_subquery().label("spans"),
            select(func.count()).select_from(requests_table).scalar_subquery().label("requests"),
        )
        with self._read() as connection:
            row = connection.execute(both).one()
        return {"spans": int(row.spans), "requests": int(row.requests)}

    def dropped_spans(self) -> int:
        """Spans dropped by every process that reported to this store."""
        query = select(func.coalesce(func.sum(process_stats_table.c.dropped), 0))
        with self._read() as connection:
            return int(connection.execute(query).scalar() or 0)

    def process_stats(self) -> list[dict[str, Any]]:
        query = select(process_stats_table).order_by(process_stats_table.c.updated_ns.desc())
        with self._read() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def recent_requests(
        self,
        limit: int = 100,
        *,
        service: str | None = None,
        route: str | None = None,
        since_ns: int | None = None,
    ) -> list[dict[str, Any]]:
        """Newest request summaries first; ``toggles``/``world``/``n_plus_one`` decoded."""
        filters = _request_filters(since_ns, service, route)
        return self._requests(filters, requests_table.c.start_ns.desc(), limit)

    def slowest_requests(
        self, limit: int = 20, since_ns: int | None = None, *, service: str | None = None
    ) -> list[dict[str, Any]]:
        filters = _request_filters(since_ns, service, None)
        return self._requests(filters, requests_table.c.duration_ms.desc(), limit)

    def _requests(
        self, filters: list[ColumnElement[bool]], order: ColumnElement[Any], limit: int
    ) -> list[dict[str, Any]]:
        query = select(requests_table).where(*filters).order_by(order).limit(limit)
        with self._read() as connection:
            return [_decode_request(row._mapping) for row in connection.execute(query)]

    def trace_spans(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of one trace, in start order, ``attributes`` decoded."""
        query = (
            select(spans_table)
            .where(spans_table.c.trace_id == trace_id.lower())
            .order_by(spans_table.c.start_ns, spans_table.c.id)
        )
        with self._read() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        for row in rows:
            row["attributes"] = json.loads(row["attributes"])
        return rows

    def aggregate_by_config(
        self,
        *,
        since_ns: int | None = None,
        service: str | None = None,
        route: str | None = None,
    ) -> list[dict[str, Any]]:
        """Per configuration string: count, p50/p95/p99, averages, hit rates, error rate.

        Percentiles are nearest-rank (the duration of the ``ceil(p * n)``-th fastest request),
        the same on SQLite and PostgreSQL. Rows come slowest median first.
        """
        where = _request_filters(since_ns, service, route)
        with self._read() as connection:
            groups = _grouped(connection, [requests_table.c.config], where, (50, 95, 99))
        out = [{"config": key[0], **summary} for key, summary in groups]
        return sorted(out, key=lambda item: item["p50_ms"], reverse=True)

    def aggregate_by_time(
        self, bucket_s: float, *, since_ns: int | None = None, service: str | None = None
    ) -> list[dict[str, Any]]:
        """Per time bucket and configuration: count, average, p50 and p95, hit rates."""
        bucket_ns = max(1, int(bucket_s * 1e9))
        bucket = (requests_table.c.start_ns // literal(bucket_ns, BigInteger)).label("bucket")
        where = _request_filters(since_ns, service, None)
        with self._read() as connection:
            groups = _grouped(connection, [bucket, requests_table.c.config], where, (50, 95))
        out = [
            {"bucket_start_ns": int(key[0]) * bucket_ns, "config": key[1], **summary}
            for key, summary in groups
        ]
        return sorted(out, key=lambda item: (item["bucket_start_ns"], item["config"]))


# --- query helpers -------------------------------------------------------------------------
def _request_filters(
    since_ns: int | None, service: str | None, route: str | None
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if since_ns is not None:
        filters.append(requests_table.c.start_ns >= since_ns)
    if service is not None:
        filters.append(requests_table.c.service == service)
    if route is not None:
        filters.append(requests_table.c.route == route)
    return filters


def _summary_columns() -> list[ColumnElement[Any]]:
    r = requests_table.c
    columns: list[ColumnElement[Any]] = [
        func.count().label("requests"),
        func.avg(r.duration_ms).label("avg_ms"),
        func.min(r.start_ns).label("first_ns"),
        func.max(r.start_ns).label("last_ns"),
        func.sum(case((r.status >= 500, 1), else_=0)).label("errors"),
        func.sum(case((r.n_plus_one_count > 0, 1), else_=0)).label("n_plus_one_requests"),
    ]
    columns += [func.avg(r[name]).label(f"avg_{name}") for name in _AVERAGED]
    for layer in _LAYERS:
        columns.append(func.sum(r[f"cache_hits_{layer}"]).label(f"hits_{layer}"))
        columns.append(func.sum(r[f"cache_misses_{layer}"]).label(f"misses_{layer}"))
    return columns


def _summary(row: Mapping[Any, Any]) -> dict[str, Any]:
    """Plain Python numbers (PostgreSQL returns ``Decimal`` averages) and derived rates."""
    count = int(row["requests"])
    out: dict[str, Any] = {
        "requests": count,
        "avg_ms": float(row["avg_ms"] or 0.0),
        "first_ns": int(row["first_ns"]),
        "last_ns": int(row["last_ns"]),
        "error_rate": int(row["errors"] or 0) / count if count else 0.0,
        "n_plus_one_requests": int(row["n_plus_one_requests"] or 0),
    }
    for name in _AVERAGED:
        out[f"avg_{name}"] = float(row[f"avg_{name}"] or 0.0)
    for layer in _LAYERS:
        hits, misses = int(row[f"hits_{layer}"] or 0), int(row[f"misses_{layer}"] or 0)
        out[f"hit_rate_{layer}"] = hits / (hits + misses) if hits + misses else None
    return out


def _grouped(
    connection: Connection,
    keys: Sequence[ColumnElement[Any]],
    where: Sequence[ColumnElement[bool]],
    percents: Sequence[int],
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Summaries per group of ``keys``, with nearest-rank duration percentiles.

    PostgreSQL computes the percentiles in the same ``GROUP BY`` (``percentile_disc`` is the
    nearest rank). SQLite has no percentile aggregate: its durations for the filtered rows are
    read in one pass (one float per request) and ranked in Python, which measured 3x faster than
    window functions on 100k requests.
    """
    duration = requests_table.c.duration_ms
    query = select(*keys, *_summary_columns()).where(*where).group_by(*keys)
    if connection.dialect.name == "postgresql":
        query = query.add_columns(
            *(func.percentile_disc(p / 100).within_group(duration).label(f"p{p}") for p in percents)
        )
        rows = connection.execute(query).all()
        ranked = {
            tuple(row[: len(keys)]): {p: row._mapping[f"p{p}"] for p in percents} for row in rows
        }
    else:
        rows = connection.execute(query).all()
        ranked = _percentiles_in_python(connection, keys, where, percents)
    out = []
    for row in rows:
        key = tuple(row[: len(keys)])
        summary = _summary(row._mapping)
        values = ranked.get(key, {})
        summary.update({f"p{p}_ms": _float(values.get(p)) for p in percents})
        out.append((key, summary))
    return out


def _percentiles_in_python(
    connection: Connection,
    keys: Sequence[ColumnElement[Any]],
    where: Sequence[ColumnElement[bool]],
    percents: Sequence[int],
) -> dict[tuple[Any, ...], dict[int, float]]:
    durations: dict[tuple[Any, ...], list[float]] = {}
    query = select(*keys, requests_table.c.duration_ms).where(*where)
    for row in connection.execute(query):
        durations.setdefault(tuple(row[:-1]), []).append(row[-1])
    return {key: nearest_ranks(values, percents) for key, values in durations.items()}


def _decode_request(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["toggles"] = json.loads(out["toggles"] or "{}")
    out["world"] = json.loads(out["world"] or "{}")
    out["n_plus_one"] = json.loads(out["n_plus_one"]) if out["n_plus_one"] else []
    return out


def _upsert_process_stats(connection: Connection, row: dict[str, Any]) -> None:
    """``INSERT ... ON CONFLICT (host, pid, service) DO UPDATE`` (SQLite and PostgreSQL)."""
    table = process_stats_table
    changing = {key: row[key] for key in ("role", "exported", "dropped", "updated_ns")}
    conflict = [table.c.host, table.c.pid, table.c.service]
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(
            postgresql_insert(table)
            .values(**row)
            .on_conflict_do_update(index_elements=conflict, set_=changing)
        )
    elif dialect == "sqlite":
        connection.execute(
            sqlite_insert(table)
            .values(**row)
            .on_conflict_do_update(index_elements=conflict, set_=changing)
        )
    else:  # any other database: update, insert when there was nothing to update
        same = and_(*(column == row[column.key] for column in conflict))
        if connection.execute(update(table).where(same).values(**changing)).rowcount == 0:
            connection.execute(insert(table).values(**row))


# --- the exporter ----------------------------------------------------------------------------
class TraceStoreExporter(SpanExporter):
    """Writes span batches to a :class:`TraceStore`; put it behind a batch span processor.

    The store (and its engine) is created lazily, in the process that exports: an exporter built
    before a fork (gunicorn master, RQ worker) opens its own connections in the child. Every
    export also upserts this process's counters into ``process_stats`` (from the source given to
    :meth:`set_stats_source`, else its own count of exported spans), and every
    ``retention_every`` exports it trims the store. ``export`` never raises.
    """

    def __init__(
        self,
        url: str,
        *,
        retention_max_age_s: float | None = 24 * 3600,
        retention_max_spans: int | None = 2_000_000,
        retention_every: int = 200,
        stats: StatsSource | None = None,
    ) -> None:
        self.url = url
        self.retention_max_age_s = retention_max_age_s
        self.retention_max_spans = retention_max_spans
        self.retention_every = max(1, retention_every)
        self._stats = stats
        self._lock = threading.Lock()
        self._store: TraceStore | None = None
        self._pid = os.getpid()
        self._exports = 0
        self._exported_spans = 0
        self._shutdown = False
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def set_stats_source(self, stats: StatsSource | None) -> None:
        """Where ``process_stats`` gets ``(exported, dropped)``, e.g. the batch processor."""
        self._stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._shutdown:
                return SpanExportResult.FAILURE
            if not spans:
                return SpanExportResult.SUCCESS
            try:
                store = self._store_for_this_process()
                self._write(store, spans)
            except Exception:  # the contract: report failure, never raise into the processor
                log.warning(
                    "could not write %d spans to the trace store", len(spans), exc_info=True
                )
                return SpanExportResult.FAILURE
            self._exports += 1
            self._exported_spans += len(spans)
            self._after_export(store, spans[0])
            return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing is buffered here: every export is written before it returns

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown = True
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the parent's export thread may have held it at fork time

    def _store_for_this_process(self) -> TraceStore:
        pid = os.getpid()
        if self._store is not None and self._pid != pid:
            # Inherited from the parent: leave its connections to it, open our own.
            self._store.engine.dispose(close=False)
            self._store, self._exports = None, 0
        if self._store is None:
            self._store = TraceStore(self.url).create()
            self._pid = pid
        return self._store

    @staticmethod
    def _write(store: TraceStore, spans: Sequence[ReadableSpan]) -> None:
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                store.write_spans(spans)
                return
            except OperationalError:  # locked past the busy timeout, or a dropped connection
                if attempt == _WRITE_ATTEMPTS:
                    raise
                time.sleep(0.1 * attempt)

    def _after_export(self, store: TraceStore, sample: ReadableSpan) -> None:
        """Bookkeeping that must not turn a written batch into a failed export."""
        try:
            exported, dropped = self._stats() if self._stats else (self._exported_spans, 0)
            resource = sample.resource.attributes
            store.record_process_stats(
                service=str(resource.get("service.name", "unknown")),
                role=str(resource.get(v.PROCESS_ROLE, "")),
                host=str(resource.get("host.name") or socket.gethostname()),
                exported=exported,
                dropped=dropped,
            )
            if self._exports % self.retention_every == 1 or self.retention_every == 1:
                store.apply_retention(
                    max_age_s=self.retention_max_age_s, max_spans=self.retention_max_spans
                )
        except Exception:
            log.warning("trace store bookkeeping failed", exc_info=True)
