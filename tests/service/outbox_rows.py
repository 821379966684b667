"""Outbox rows in any state and of any age, for the outbox's and the relay's tests."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Engine, insert

from latency_lab.service.models import OutboxEvent, OutboxState, utcnow


def store_rows(engine: Engine, state: OutboxState, *, hours_ago: float, count: int) -> None:
    """``count`` rows in ``state``, last changed (and due) ``hours_ago``."""
    at = utcnow() - timedelta(hours=hours_ago)
    rows = [
        {"event_id": uuid.uuid4().hex, "task": "send_owner_email",
         "arguments": "{}", "trace_context": "{}", "state": state.value, "dispatches": 1,
         "created_at": at, "updated_at": at, "available_at": at}
        for _ in range(count)
    ]  # fmt: skip
    with engine.begin() as connection:
        connection.execute(insert(OutboxEvent), rows)
