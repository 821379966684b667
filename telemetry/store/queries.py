"""The read side's SQL: filters, per-group summaries with percentiles, decoded rows, the upsert.

Every query over the store's tables is built here or in :class:`~.trace_store.TraceStore`; the
dashboard, the bench and the tests ask the store instead of reading its tables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from latency_lab.telemetry.percentiles import nearest_ranks
from latency_lab.telemetry.store.schema import (
    EDGE_ROLE,
    LAYERS,
    process_stats_table,
    requests_table,
)

AVERAGED = ("db_statements", "db_time_ms", "ext_calls", "ext_time_ms", "jobs_enqueued")


def request_filters(since_ns: int | None = None, **equal: Any) -> list[ColumnElement[bool]]:
    """``start_ns >= since_ns``, and ``column == value`` for every ``equal`` that is not None."""
    r = requests_table.c
    filters: list[ColumnElement[bool]] = []
    if since_ns is not None:
        filters.append(r.start_ns >= since_ns)
    filters += [r[name] == value for name, value in equal.items() if value is not None]
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
        func.sum(case((r.role == EDGE_ROLE, 1), else_=0)).label("at_edge"),
    ]
    columns += [func.avg(r[name]).label(f"avg_{name}") for name in AVERAGED]
    for layer in LAYERS:
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
        "at_edge": int(row["at_edge"] or 0),
    }
    for name in AVERAGED:
        out[f"avg_{name}"] = float(row[f"avg_{name}"] or 0.0)
    for layer in LAYERS:
        hits, misses = int(row[f"hits_{layer}"] or 0), int(row[f"misses_{layer}"] or 0)
        out[f"hit_rate_{layer}"] = hits / (hits + misses) if hits + misses else None
    return out


def grouped(
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
        summary.update({f"p{p}_ms": float(values.get(p) or 0.0) for p in percents})
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


def decode_request(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A ``requests`` row with ``toggles``, ``world`` and ``n_plus_one`` decoded from JSON."""
    out = dict(row)
    out["toggles"] = json.loads(out["toggles"] or "{}")
    out["world"] = json.loads(out["world"] or "{}")
    out["n_plus_one"] = json.loads(out["n_plus_one"]) if out["n_plus_one"] else []
    out["front_door"] = bool(out["front_door"])
    return out


def upsert_process_stats(connection: Connection, row: dict[str, Any]) -> None:
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
