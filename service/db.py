"""The application database: engine, per-request sessions, and the simulated network round trip.

The engine is instrumented (one span per statement) and, to imitate a database across the
network, each statement waits the world's ``db_round_trip_ms`` before it runs, inside its span.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from latency_lab.service.models import Base
from latency_lab.telemetry.database_url import normalize_url


def build_engine(url: str, **kwargs: Any) -> Engine:
    """The engine for ``url``; safe to build before a fork (gunicorn ``--preload``)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(parsed, **kwargs)
    _fresh_pool_after_fork(engine)
    return engine


def _fresh_pool_after_fork(engine: Engine) -> None:
    """A forked child must not use its parent's pooled connections (two processes on one socket
    or SQLite handle): it forgets them, without closing them under the parent (SQLAlchemy's
    "using connection pools with multiprocessing", ``dispose(close=False)``)."""
    engine_ref = weakref.ref(engine)

    def forget_inherited_connections() -> None:
        inherited = engine_ref()
        if inherited is not None:
            inherited.dispose(close=False)

    os.register_at_fork(after_in_child=forget_inherited_connections)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def inject_round_trip(engine: Engine, round_trip_ms: Callable[[], float]) -> None:
    """Make every statement wait one network round trip (registered after instrumentation, so
    the wait falls inside the statement's span)."""

    def _wait(*_args: Any) -> None:
        delay_ms = round_trip_ms()
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)

    event.listen(engine, "before_cursor_execute", _wait)


def create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
