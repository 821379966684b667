"""The service tells the outbox relay when a write leaves it work: on SQLite one Redis PUBLISH
after its delivery attempt, on PostgreSQL the database's own NOTIFY (a trigger), so the request
sends nothing more. And the outbox's pruning deletes delivered rows only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from latency_lab.service import outbox
from latency_lab.service.db import build_engine, create_schema, session_factory
from latency_lab.service.models import OutboxState, utcnow
from tests.lab_fixtures import NEW_LEAD, Lab, ThirdParty, make_lab
from tests.postgres import _libpq
from tests.service.outbox_rows import store_rows


@pytest.fixture
def relay_channel(lab_redis: str) -> Iterator[Any]:
    """A subscription to the relay's Redis channel, as the SQLite relay listens."""
    client = redis.Redis.from_url(lab_redis)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(outbox.WAKEUP_CHANNEL)
    pubsub.get_message(timeout=1.0)  # the subscription's confirmation
    yield pubsub
    pubsub.close()
    client.close()


@pytest.fixture
def sqlite_lab(
    sqlite_url: str, lab_redis: str, thirdparty: ThirdParty, tmp_path: Path
) -> Iterator[Lab]:
    lab = make_lab(sqlite_url, lab_redis, thirdparty.url, tmp_path)
    yield lab
    lab.close()


def heard(pubsub: Any, wait_s: float = 0.5) -> list[datetime]:
    payloads = []
    while (message := pubsub.get_message(timeout=wait_s)) is not None:
        payloads.append(outbox.due_of(message["data"].decode()))
        wait_s = 0.1
    return payloads


def create(lab: Lab, toggles: str) -> Any:
    response = lab.client.post("/api/leads", json=NEW_LEAD, headers={"X-Lab-Toggles": toggles})
    assert response.status_code == 201
    return response


def test_an_offloaded_write_on_sqlite_tells_the_relay_once_when_to_check(
    sqlite_lab: Lab, relay_channel: Any
) -> None:
    sent = utcnow()
    create(sqlite_lab, "async_offload=on")

    dues = heard(relay_channel)
    assert len(dues) == 1
    wait_s = (dues[0] - sent).total_seconds()
    assert outbox.RECHECK_DISPATCHED_AFTER_S <= wait_s < outbox.RECHECK_DISPATCHED_AFTER_S + 2


def test_a_write_delivered_inline_leaves_the_relay_nothing_to_hear(
    sqlite_lab: Lab, relay_channel: Any
) -> None:
    create(sqlite_lab, "async_offload=off")

    assert heard(relay_channel) == []


@pytest.mark.postgres
def test_on_postgresql_the_database_notifies_and_the_service_publishes_nothing(
    postgres_database: str, lab_redis: str, thirdparty: ThirdParty, tmp_path: Path,
    relay_channel: Any,
) -> None:  # fmt: skip
    lab = make_lab(postgres_database, lab_redis, thirdparty.url, tmp_path)
    assert outbox.install_wakeup_trigger(lab.app.extensions["latency_lab"].engine)
    with psycopg.connect(_libpq(postgres_database), autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.WAKEUP_CHANNEL}")
        sent = utcnow()
        create(lab, "async_offload=on")
        notes = list(listener.notifies(timeout=1.0))
    lab.close()

    # The INSERT (held for the request) and the request's settlement (check it in 5 s).
    assert len(notes) == 2, notes
    dues = [outbox.due_of(note.payload) - sent for note in notes]
    assert all(timedelta(seconds=4) < due < timedelta(seconds=7) for due in dues), dues
    assert heard(relay_channel) == []


# --- pruning -----------------------------------------------------------------------------------
def test_pruning_deletes_delivered_rows_older_than_the_window_a_batch_at_a_time(
    database_url: str,
) -> None:
    engine = build_engine(database_url)
    create_schema(engine)
    for state in OutboxState:
        store_rows(engine, state, hours_ago=30, count=3)  # every state, old
    store_rows(engine, OutboxState.DELIVERED, hours_ago=30, count=2)
    store_rows(engine, OutboxState.DELIVERED, hours_ago=1, count=4)  # within the window
    older_than = utcnow() - timedelta(hours=24)

    with session_factory(engine)() as session:
        batches = [
            outbox.prune_delivered(session=session, older_than=older_than, batch=3)
            for _ in range(3)
        ]
        session.commit()
        left = outbox.counts(session=session)
    engine.dispose()

    assert batches == [3, 2, 0]
    assert left == {"pending": 3, "dispatched": 3, "delivered": 4, "failed": 3, "dropped": 3}
