"""What an idle outbox relay costs the database: statements per 5 seconds (goal: at most 1).

Two ways to measure, for the bench report and for anyone curious:

* :func:`measure_idle_relay` starts a relay in this process, built as
  ``python -m latency_lab.worker.relay`` builds its own (the same listener, the same schedule),
  lets it take its first look, then counts every statement it sends during the window (a
  SQLAlchemy ``before_cursor_execute`` listener on its engine). Any database, SQLite included.
* :func:`measure_running_relay` watches a relay that is already running, on PostgreSQL, by the
  server's own counters: scans of the outbox table (``pg_stat_user_tables``). Every statement the
  relay sends reads or changes that table; on an idle lab nothing else does. Two caveats: an
  idle connection's counters reach the view up to 10 s late (start the window 10 s after the
  relay's last activity, and make it long), and before PostgreSQL 17 a look's
  ``state IN (...)`` counts one scan per state, so the figure is at most twice the statements.

Usage::

    idle = measure_idle_relay(settings.resolved_database_url, settings.redis_url, window_s=30)
    print(f"{idle.per_5_s:.2f} statements per 5 s ({idle.statements} in {idle.window_s:.0f} s)")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from sqlalchemy import Engine, event, text

from latency_lab.service.db import build_engine, create_schema
from latency_lab.service.models import OutboxEvent
from latency_lab.worker.relay import relay_on

# Long enough for the relay's first look (start-up, the trigger, a prune) to be over.
WARM_UP_S = 2.0
GOAL_PER_5_S = 1.0


@dataclass(frozen=True)
class RelayIdle:
    """Statements an idle relay sent in a window, and how they were counted."""

    statements: int
    window_s: float
    counted_by: str  # "sqlalchemy" (the relay's engine) | "pg_stat_user_tables"

    @property
    def per_5_s(self) -> float:
        return self.statements * 5.0 / self.window_s

    @property
    def meets_goal(self) -> bool:
        return self.per_5_s <= GOAL_PER_5_S


class StatementCounter:
    """Counts the statements an engine sends (every cursor execute, the relay's pings aside)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        with self._lock:
            self.count += 1


def measure_idle_relay(
    database_url: str,
    redis_url: str | None,
    *,
    window_s: float = 30.0,
    warm_up_s: float = WARM_UP_S,
    **relay_options: Any,
) -> RelayIdle:
    """Start a relay here, and count what it sends while the outbox has nothing for it."""
    engine = build_engine(database_url)
    try:
        create_schema(engine)
        counter = StatementCounter(engine)
        relay = relay_on(engine, redis_url, tracer=trace.get_tracer(__name__), **relay_options)
        stop = threading.Event()
        runner = threading.Thread(target=relay.run, args=(stop,), name="idle-relay", daemon=True)
        runner.start()
        try:
            time.sleep(warm_up_s)
            before = counter.count
            time.sleep(window_s)
            sent = counter.count - before
        finally:
            stop.set()
            runner.join(timeout=10)
        return RelayIdle(statements=sent, window_s=window_s, counted_by="sqlalchemy")
    finally:
        engine.dispose()


def measure_running_relay(database_url: str, *, window_s: float = 60.0) -> RelayIdle:
    """The PostgreSQL server's count of scans of the outbox during ``window_s`` (at least the
    statements sent to it, at most twice as many)."""
    engine = build_engine(database_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        raise ValueError(
            "a running relay can be watched on PostgreSQL only (its statistics views); "
            "on SQLite use measure_idle_relay"
        )
    try:
        before = outbox_scans(engine)
        time.sleep(window_s)
        after = outbox_scans(engine)
    finally:
        engine.dispose()
    return RelayIdle(statements=after - before, window_s=window_s, counted_by="pg_stat_user_tables")


def outbox_scans(engine: Engine) -> int:
    """Sequential plus index scans of the outbox table so far (PostgreSQL's statistics)."""
    query = text(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
        "WHERE relid = to_regclass(:table)"
    )
    with engine.connect() as connection:
        return int(connection.scalar(query, {"table": OutboxEvent.__tablename__}) or 0)
