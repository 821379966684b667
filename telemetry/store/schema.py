"""The trace store's tables, its URLs and its engine.

Three tables: ``spans`` (every span), ``requests`` (one summary row per ``SERVER`` span) and
``process_stats`` (per process, spans exported and dropped). :func:`create_tables` creates them
and brings a store file from an older lab up to date (the ``front_door`` column and its index).

The store's engine is its own and never instrumented: SQLite runs in WAL mode with a busy
timeout and explicit ``BEGIN`` modes (see :func:`create_store_engine`), so many processes can
write at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
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
    create_engine,
    event,
    false,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.pool import StaticPool

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.database_url import normalize_url

LAYERS = tuple(layer.value for layer in v.CacheLayer)
EDGE_ROLE = "edge"  # the process role of the lab's edge, whose server spans are front doors
SERVICE_ROLE = "service"  # the lead service's
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

REQUEST_COUNTERS = [
    "db_statements",
    "ext_calls",
    "jobs_enqueued",
    *(f"cache_{outcome}_{layer}" for layer in LAYERS for outcome in ("hits", "misses")),
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
    *(Column(name, Integer, nullable=False) for name in REQUEST_COUNTERS),
    Column("config", Text, nullable=False),
    Column("toggles", Text, nullable=False),
    Column("world", Text, nullable=False),
    Column("n_plus_one", Text),
    Column("n_plus_one_count", Integer, nullable=False),
    # Where the request entered the lab: one row per request has it (see rows.request_row).
    Column("front_door", Boolean, nullable=False, server_default=false()),
    Index("ix_requests_start_ns", "start_ns"),
    Index("ix_requests_config_start", "config", "start_ns"),
    Index("ix_requests_service_start", "service", "start_ns"),
    Index("ix_requests_trace_id", "trace_id"),
    Index("ix_requests_duration", "duration_ms"),
    Index("ix_requests_front_door_start", "front_door", "start_ns"),
)

profiles_table = Table(
    "profiles",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("service", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("document", Text, nullable=False),  # speedscope JSON (telemetry.profiles)
    Index("ix_profiles_trace_id", "trace_id"),
    Index("ix_profiles_start_ns", "start_ns"),
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


# --- URLs and the engine -------------------------------------------------------------------------
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
def untraced() -> Iterator[None]:
    """Suppress OpenTelemetry instrumentation: the store's own work is never a span."""
    with suppress_instrumentation():
        yield


# --- creating and upgrading ----------------------------------------------------------------------
def create_tables(connection: Connection) -> None:
    """Create missing tables, and add what a store from an older lab lacks."""
    metadata.create_all(connection, checkfirst=True)
    columns = {column["name"] for column in inspect(connection).get_columns("requests")}
    if "front_door" not in columns:
        _add_front_door(connection)
    indexes = {index["name"] for index in inspect(connection).get_indexes("requests")}
    for index in requests_table.indexes:
        if index.name not in indexes:
            index.create(connection)


def _add_front_door(connection: Connection) -> None:
    """``ALTER TABLE requests ADD COLUMN front_door``, set for the rows already there.

    Older rows carry no ``lab.request.front_door`` attribute: the edge's rows are front doors,
    and so are the service's rows of traces the edge has no row in.
    """
    connection.exec_driver_sql(
        "ALTER TABLE requests ADD COLUMN front_door BOOLEAN NOT NULL DEFAULT false"
    )
    r = requests_table.c
    through_edge = select(r.trace_id).where(r.role == EDGE_ROLE).scalar_subquery()
    connection.execute(
        update(requests_table)
        .where(
            or_(r.role == EDGE_ROLE, and_(r.role == SERVICE_ROLE, r.trace_id.not_in(through_edge)))
        )
        .values(front_door=True)
    )
