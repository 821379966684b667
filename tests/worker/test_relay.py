"""The outbox relay wakes on new work instead of polling, and keeps the table bounded.

An in-process relay (built as ``python -m latency_lab.worker.relay`` builds its own) on a real
database and Redis. Counts, not timings: the statements it sends (its engine's
``before_cursor_execute``), why it looked (``relay.looks``), the rows it moved. Wall-clock bounds
are loose and only tell "woken" from "stuck".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from opentelemetry import trace
from sqlalchemy import Engine, select

from latency_lab.benchmarks.relay_idle import StatementCounter, outbox_scans
from latency_lab.lab.redis_server import RedisServer
from latency_lab.service import outbox, tasks
from latency_lab.service.db import build_engine, create_schema, session_factory
from latency_lab.service.models import OutboxEvent, OutboxState, utcnow
from latency_lab.service.outbox import SideEffect
from latency_lab.worker.relay import PRUNE_BATCH, Look, OutboxRelay, relay_on
from latency_lab.worker.wakeups import Listener, PostgresListener
from tests.lab_fixtures import eventually
from tests.postgres import _libpq
from tests.service.outbox_rows import store_rows


@dataclass
class RunningRelay:
    relay: OutboxRelay
    statements: StatementCounter
    database_url: str
    redis_url: str

    @property
    def listener(self) -> Listener:
        wakeups = self.relay.wakeups
        assert isinstance(wakeups, Listener)
        return wakeups

    def ready(self) -> bool:
        """Its first look done, listening, and the look that follows (it may have missed
        something before it listened) done too."""
        looks = self.relay.looks
        return looks[Look.START] == 1 and self.listener.listening and looks[Look.NOTIFIED] >= 1

    def add_row(self, *, hold_s: float = 0.0, ring: bool = True) -> str:
        return add_row(self.database_url, self.redis_url if ring else None, hold_s=hold_s)

    def state_of(self, event_id: str) -> str | None:
        engine = build_engine(self.database_url)
        try:
            with session_factory(engine)() as session:
                query = select(OutboxEvent.state).where(OutboxEvent.event_id == event_id)
                return session.scalar(query)
        finally:
            engine.dispose()


def add_row(database_url: str, redis_url: str | None, *, hold_s: float = 0.0) -> str:
    """One pending side effect, committed as a write commits it. With ``redis_url`` on SQLite,
    the relay is told as the service tells it (on PostgreSQL the database tells it anyway)."""
    engine = build_engine(database_url)
    try:
        with session_factory(engine)() as session:
            [stored] = outbox.record(
                [SideEffect(tasks.send_owner_email, {"lead_id": 1})], session=session, hold_s=hold_s
            )
            session.commit()
    finally:
        engine.dispose()
    if redis_url is not None and not stored.relay_notified:
        with redis.Redis.from_url(redis_url) as client:
            due = utcnow() + timedelta(seconds=hold_s)
            client.publish(outbox.WAKEUP_CHANNEL, outbox.wakeup_payload(due))
    return stored.event_id


@contextmanager
def running_relay(database_url: str, redis_url: str, **options: Any) -> Iterator[RunningRelay]:
    engine = build_engine(database_url)
    create_schema(engine)
    counter = StatementCounter(engine)
    relay = relay_on(engine, redis_url, tracer=trace.get_tracer(__name__), **options)
    running = RunningRelay(relay, counter, database_url, redis_url)
    stop = threading.Event()
    runner = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert eventually(running.ready, timeout_s=10), f"relay not listening: {relay.looks}"
        yield running
    finally:
        stop.set()
        runner.join(timeout=10)
        engine.dispose()
    assert not runner.is_alive(), "the relay did not stop within a wait slice"


def dispatched(running: RunningRelay, event_id: str, timeout_s: float = 5.0) -> bool:
    check = lambda: running.state_of(event_id) == OutboxState.DISPATCHED.value  # noqa: E731
    return bool(eventually(check, timeout_s=timeout_s))


def looked(running: RunningRelay, reason: Look, times: int) -> dict[Look, int]:
    """The relay's looks once it has looked ``times`` for ``reason`` (a look is counted when
    it is over, a moment after the row it dispatched is committed)."""
    eventually(lambda: running.relay.looks[reason] >= times, timeout_s=5)
    return dict(running.relay.looks)


# --- idle: no polling ------------------------------------------------------------------------
def test_an_idle_relay_sends_at_most_one_statement_per_5_seconds(
    database_url: str, lab_redis: str
) -> None:
    with running_relay(database_url, lab_redis, safety_net_s=6.0) as running:
        before = running.statements.count
        time.sleep(13.0)
        sent = running.statements.count - before
        looks = dict(running.relay.looks)

    # The old relay sent 2 statements every 0.5 s: 52 in this window.
    assert sent <= 13.0 / 5, f"{sent} statements in 13 s: {looks}"
    assert sent == looks.get(Look.SAFETY_NET) and sent >= 1  # one statement per safety-net look
    assert set(looks) == {Look.START, Look.NOTIFIED, Look.SAFETY_NET}


@pytest.mark.postgres
def test_postgresql_sees_no_other_statement_on_the_outbox(
    postgres_database: str, lab_redis: str
) -> None:
    """The server's own count agrees: scans of the outbox table over the relay's whole life
    (published when its connections close) are its looks' and nothing else's. Before version 17
    PostgreSQL counts one scan per key of the look's ``state IN (...)``: two per look."""
    engine = build_engine(postgres_database)
    with running_relay(postgres_database, lab_redis) as running:
        before = running.statements.count
        time.sleep(12.0)
        sent = running.statements.count - before
        looks = sum(running.relay.looks.values())
    scans = eventually(lambda: outbox_scans(engine), timeout_s=5)
    engine.dispose()

    assert sent == 0, running.relay.looks
    assert looks <= scans <= 2 * looks, f"{scans} scans for {looks} looks"


# --- woken by a notification, or when a known row comes due ------------------------------------
def test_a_new_row_is_dispatched_when_the_relay_is_told(database_url: str, lab_redis: str) -> None:
    with running_relay(database_url, lab_redis) as running:
        started = time.monotonic()
        event_id = running.add_row(hold_s=0)
        assert dispatched(running, event_id), running.relay.looks
        took_s = time.monotonic() - started
        looks = looked(running, Look.NOTIFIED, 2)

    assert looks.get(Look.NOTIFIED, 0) >= 2  # "listening now" at start, then the new row
    assert Look.SAFETY_NET not in looks and Look.DEAF_POLL not in looks
    assert took_s < 2.0, f"dispatched {took_s:.2f} s after the commit"


def test_a_held_row_is_dispatched_when_it_comes_due_without_being_told(
    database_url: str, lab_redis: str
) -> None:
    """The relay learns the earliest ``available_at`` when it looks, and sleeps until then (a
    row held for a retry, or leased: nobody announces when a hold ends)."""
    event_id = add_row(database_url, None, hold_s=2.0)  # before the relay listens
    with running_relay(database_url, lab_redis) as running:
        assert running.state_of(event_id) == OutboxState.PENDING.value
        assert dispatched(running, event_id), running.relay.looks
        looks = looked(running, Look.DUE, 1)

    assert looks.get(Look.DUE, 0) >= 1, looks
    assert Look.SAFETY_NET not in looks and Look.DEAF_POLL not in looks, looks


def test_a_row_nobody_announced_is_found_by_the_safety_net(sqlite_url: str, lab_redis: str) -> None:
    """A notification lost (the service could not publish): the slow poll still finds it."""
    with running_relay(sqlite_url, lab_redis, safety_net_s=2.0) as running:
        event_id = running.add_row(hold_s=0, ring=False)
        assert dispatched(running, event_id), running.relay.looks
        looks = looked(running, Look.SAFETY_NET, 1)

    assert looks.get(Look.SAFETY_NET, 0) >= 1, looks


# --- the line to the notifications breaks -----------------------------------------------------
@pytest.mark.postgres
def test_a_lost_listen_connection_falls_back_to_polling_and_listens_again(
    postgres_database: str, lab_redis: str
) -> None:
    with running_relay(postgres_database, lab_redis) as running:
        listener = running.listener
        assert isinstance(listener, PostgresListener) and listener.backend_pid is not None
        with psycopg.connect(_libpq(postgres_database), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
        assert eventually(lambda: listener.reconnects == 1, timeout_s=10)
        event_id = running.add_row(hold_s=0)
        assert dispatched(running, event_id), running.relay.looks
        looks = looked(running, Look.NOTIFIED, 2)

    # Heard at start, and again after the cut (the new row's notification may share that look).
    assert looks.get(Look.NOTIFIED, 0) >= 2 and Look.SAFETY_NET not in looks, looks


def test_redis_down_makes_the_sqlite_relay_poll_until_it_can_listen_again(
    sqlite_url: str, tmp_path: Path
) -> None:
    server = RedisServer(workdir=tmp_path / "redis").start()
    try:
        with running_relay(sqlite_url, server.url) as running:
            assert server.process is not None
            server.process.kill()
            server.process.wait(timeout=10)
            assert eventually(lambda: running.relay.looks[Look.DEAF_POLL] >= 2, timeout_s=10)
            server.start()  # empty, same port
            assert eventually(lambda: running.listener.reconnects == 1, timeout_s=10)
            event_id = running.add_row(hold_s=0)
            assert dispatched(running, event_id), running.relay.looks
    finally:
        server.stop()


# --- pruning ---------------------------------------------------------------------------------
def test_the_relay_prunes_only_delivered_rows_older_than_the_window(
    database_url: str, lab_redis: str
) -> None:
    """A batch per statement, ten batches per look: a backlog of 10,500 takes two looks, the
    second half a second after the first."""
    engine = build_engine(database_url)
    create_schema(engine)
    old, recent = 3.0, 0.5  # hours; the window is 2 h
    for state, hours_ago, count in [
        (OutboxState.DELIVERED, old, 10 * PRUNE_BATCH + 500),
        (OutboxState.DELIVERED, recent, 7),
        (OutboxState.FAILED, old, 3),
        (OutboxState.DROPPED, old, 4),
    ]:
        store_rows(engine, state, hours_ago=hours_ago, count=count)

    wanted = {"pending": 0, "dispatched": 0, "delivered": 7, "failed": 3, "dropped": 4}
    with running_relay(database_url, lab_redis, retention_s=2 * 3600) as running:
        assert eventually(lambda: _states(engine) == wanted, timeout_s=5), _states(engine)
        before = running.statements.count
        time.sleep(1.0)
        sent = running.statements.count - before
    engine.dispose()

    assert sent == 0  # done: the next prune is 30 minutes away (a quarter of the window)


def _states(engine: Engine) -> dict[str, int]:
    with session_factory(engine)() as session:
        return outbox.counts(session=session)
