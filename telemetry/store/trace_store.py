"""The :class:`TraceStore`: writes from exporters, and every read the dashboard and bench make.

Writers are many processes at once: every write is one ``BEGIN IMMEDIATE`` transaction on SQLite
(spans and their summary rows together), so a reader sees whole batches or nothing; on
PostgreSQL, reads run at ``REPEATABLE READ`` so a read of several queries sees one snapshot.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Table,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.exc import DBAPIError

from latency_lab.telemetry.store.queries import (
    decode_request,
    grouped,
    request_filters,
    upsert_process_stats,
)
from latency_lab.telemetry.store.rows import profile_row, request_row, span_row
from latency_lab.telemetry.store.schema import (
    create_store_engine,
    create_tables,
    process_stats_table,
    profiles_table,
    requests_table,
    spans_table,
    untraced,
)

WRITE_ATTEMPTS = 3
_DELETE_CHUNK = 10_000


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
        """Create the tables if missing (and upgrade an older store's); safe when several
        processes start at once."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with untraced(), self._writer.begin() as connection:
                    create_tables(connection)
                return self
            except DBAPIError:
                # Another process created the same table between our check and our CREATE.
                if attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
        return self

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with untraced(), self._writer.begin() as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with untraced(), self._reader.connect() as connection:
            yield connection

    # --- writes ----------------------------------------------------------------------------
    def write_spans(self, spans: Sequence[ReadableSpan]) -> None:
        """Insert spans and their request summaries in one transaction."""
        span_rows, request_rows, profile_rows = [], [], []
        for span in spans:
            attributes = dict(span.attributes or {})  # once: SDK attributes iterate slowly
            row = span_row(span, attributes)
            span_rows.append(row)
            summary = request_row(span, row, attributes)
            if summary is not None:
                request_rows.append(summary)
            profiled = profile_row(span, row)
            if profiled is not None:
                profile_rows.append(profiled)
        if not span_rows:
            return
        with self._write() as connection:
            connection.execute(insert(spans_table), span_rows)
            if request_rows:
                connection.execute(insert(requests_table), request_rows)
            if profile_rows:
                connection.execute(insert(profiles_table), profile_rows)

    def insert_rows(
        self, *, spans: Sequence[dict[str, Any]], requests: Sequence[dict[str, Any]]
    ) -> None:
        """Insert ready-made ``spans`` and ``requests`` rows in one transaction (the bench's
        synthetic store)."""
        with self._write() as connection:
            if requests:
                connection.execute(insert(requests_table), list(requests))
            if spans:
                connection.execute(insert(spans_table), list(spans))

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
            upsert_process_stats(connection, row)

    def apply_retention(self, *, max_age_s: float | None, max_spans: int | None) -> int:
        """Delete the oldest spans and requests beyond an age or a span count; spans deleted."""
        cutoff = self._retention_cutoff(max_age_s, max_spans)
        if cutoff is None:
            return 0
        deleted = self._delete_older(spans_table, cutoff)
        self._delete_older(requests_table, cutoff)
        self._delete_older(profiles_table, cutoff)
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

    # --- reads: counts and processes -------------------------------------------------------
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

    # --- reads: request summaries ----------------------------------------------------------
    def recent_requests(
        self,
        limit: int = 100,
        *,
        service: str | None = None,
        route: str | None = None,
        since_ns: int | None = None,
        role: str | None = None,
        config: str | None = None,
        front_door: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Newest request summaries first; ``toggles``/``world``/``n_plus_one`` decoded.

        Every filter left ``None`` is not applied: ``front_door=True`` keeps one row per request,
        where it entered the lab (see :mod:`.rows`).
        """
        filters = request_filters(
            since_ns, service=service, route=route, role=role, config=config, front_door=front_door
        )
        return self._requests(filters, (requests_table.c.start_ns.desc(),), limit)

    def slowest_requests(
        self,
        limit: int = 20,
        since_ns: int | None = None,
        *,
        service: str | None = None,
        role: str | None = None,
    ) -> list[dict[str, Any]]:
        filters = request_filters(since_ns, service=service, role=role)
        # Equal durations, oldest first: the same order on SQLite and PostgreSQL, any plan.
        order = (requests_table.c.duration_ms.desc(), requests_table.c.start_ns)
        return self._requests(filters, order, limit)

    def _requests(
        self,
        filters: list[ColumnElement[bool]],
        order: Sequence[ColumnElement[Any]],
        limit: int,
    ) -> list[dict[str, Any]]:
        query = select(requests_table).where(*filters).order_by(*order).limit(limit)
        with self._read() as connection:
            return [decode_request(row._mapping) for row in connection.execute(query)]

    def recent_trace_ids(
        self, limit: int, *, config: str, since_ns: int | None = None, front_door: bool = True
    ) -> list[str]:
        """The newest ``limit`` trace ids of one configuration (front doors only, by default):
        one indexed query, for sampling a configuration's traces on a large store."""
        r = requests_table.c
        query = (
            select(r.trace_id)
            .where(*request_filters(since_ns, config=config, front_door=front_door))
            .order_by(r.start_ns.desc())
            .limit(limit)
        )
        with self._read() as connection:
            return list(connection.execute(query).scalars())

    def costs_by_config(
        self,
        *,
        route: str,
        method: str,
        since_ns: int | None = None,
        role: str | None = None,
        service: str | None = None,
    ) -> list[dict[str, Any]]:
        """Per configuration, the average cost of one route and method: ``config``,
        ``requests``, ``statements`` (average statements) and ``ext_ms`` (average third-party
        time). A plain ``GROUP BY``, lighter than :meth:`aggregate_by_config`."""
        r = requests_table.c
        query = (
            select(
                r.config,
                func.count().label("requests"),
                func.avg(r.db_statements).label("statements"),
                func.avg(r.ext_time_ms).label("ext_ms"),
            )
            .where(
                *request_filters(since_ns, route=route, method=method, role=role, service=service)
            )
            .group_by(r.config)
        )
        with self._read() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            {
                "config": row["config"],
                "requests": int(row["requests"]),
                "statements": float(row["statements"] or 0.0),
                "ext_ms": float(row["ext_ms"] or 0.0),
            }
            for row in rows
        ]

    # --- reads: spans ----------------------------------------------------------------------
    def trace_profiles(self, trace_id: str) -> list[dict[str, Any]]:
        """The profiles of one trace's spans, the front door's request first, then its jobs:
        ``trace_id``, ``span_id``, ``service``, ``name``, ``start_ns``, ``document``."""
        p = profiles_table.c
        query = select(profiles_table).where(p.trace_id == trace_id.lower()).order_by(p.start_ns)
        with self._read() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

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

    def spans_of_traces(
        self, trace_ids: Sequence[str], columns: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The spans of several traces (only ``columns``, when given), ``attributes`` decoded."""
        if not trace_ids:
            return []
        s = spans_table.c
        chosen = [s[name] for name in columns] if columns is not None else [spans_table]
        query = select(*chosen).where(s.trace_id.in_([t.lower() for t in trace_ids]))
        with self._read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        for row in rows:
            if "attributes" in row:
                row["attributes"] = json.loads(row["attributes"])
        return rows

    # --- reads: aggregates -----------------------------------------------------------------
    def aggregate_by_config(
        self,
        *,
        since_ns: int | None = None,
        service: str | None = None,
        route: str | None = None,
        role: str | None = None,
        front_door: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Per configuration string: count, p50/p95/p99, averages, hit rates, error rate, and
        ``at_edge`` (how many of the requests the edge recorded).

        Percentiles are nearest-rank (the duration of the ``ceil(p * n)``-th fastest request),
        the same on SQLite and PostgreSQL. Rows come slowest median first.
        """
        where = request_filters(
            since_ns, service=service, route=route, role=role, front_door=front_door
        )
        with self._read() as connection:
            groups = grouped(connection, [requests_table.c.config], where, (50, 95, 99))
        out = [{"config": key[0], **summary} for key, summary in groups]
        return sorted(out, key=lambda item: item["p50_ms"], reverse=True)

    def aggregate_by_time(
        self,
        bucket_s: float,
        *,
        since_ns: int | None = None,
        service: str | None = None,
        role: str | None = None,
        front_door: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Per time bucket and configuration: count, average, p50 and p95, hit rates."""
        bucket_ns = max(1, int(bucket_s * 1e9))
        bucket = (requests_table.c.start_ns // literal(bucket_ns, BigInteger)).label("bucket")
        where = request_filters(since_ns, service=service, role=role, front_door=front_door)
        with self._read() as connection:
            groups = grouped(connection, [bucket, requests_table.c.config], where, (50, 95))
        out = [
            {"bucket_start_ns": int(key[0]) * bucket_ns, "config": key[1], **summary}
            for key, summary in groups
        ]
        return sorted(out, key=lambda item: (item["bucket_start_ns"], item["config"]))
