"""The transactional outbox: a write's side effects, stored with the write, delivered after it.

The article moves email, analytics and enrichment onto a queue; but a queue is one more system
that can be down. So a write (creating or changing a lead) stores one
:class:`~latency_lab.service.models.OutboxEvent` per side effect *in the same transaction as the
lead*: once the lead is committed, its side effects cannot be lost. From there:

1. the request delivers them at once (:func:`latency_lab.service.offload.deliver`), inline or as RQ
   jobs, and settles each row: ``delivered``, ``dispatched`` (enqueued), ``dropped`` (a best-effort
   analytics event whose inline call failed) or still ``pending`` (Redis was down; or an inline
   email or enrichment failed, kept for a retry by a worker);
2. the relay (``python -m latency_lab.worker.relay``, started by ``latency-lab up``) enqueues the
   rows still pending once their hold is over, and dispatches again the rows whose job Redis no
   longer knows (a Redis restart loses every queue);
3. the job marks its row ``delivered`` once it has run
   (:class:`latency_lab.service.tasks.TracedJob`).

Any of these may deliver a side effect twice (a worker killed after its call, a relay that
re-dispatches a lost job): each row's ``event_id`` is the provider's idempotency key, so every
side effect is delivered once in effect.

``available_at`` is when the relay looks at a row next: a new row is held while its request is
still delivering it, a dispatched row is checked again from time to time. The relay does not poll
for new rows: it is told (``WAKEUP_CHANNEL``, the payload is the earliest ``available_at`` of the
rows that changed). On PostgreSQL a trigger sends ``NOTIFY`` in the transaction that inserts or
reschedules rows (:func:`install_wakeup_trigger`); SQLite cannot notify, so the service publishes
the same payload on Redis after its delivery attempt (:func:`latency_lab.service.offload.deliver`).
Delivered rows are deleted after a retention window (:func:`prune_delivered`); failed and dropped
rows stay for a user to inspect.

Usage, inside the write's transaction::

    stored = record([SideEffect(tasks.send_owner_email, {"lead_id": 7})], session=s, hold_s=5)
    s.commit()
    ...deliver...
    settle({event_id: Settlement(OutboxState.DELIVERED)}, session=s)
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from opentelemetry import propagate
from sqlalchemy import CursorResult, Engine, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from latency_lab.service.models import OutboxEvent, OutboxState, utcnow

# How long the relay leaves a new row to its request, beyond the request's own calls.
HOLD_MARGIN_S = 5.0
# An inline email or enrichment that failed is handed to a worker this much later.
RETRY_FAILED_CALL_AFTER_S = 2.0
# How often the relay checks that a dispatched row's job still exists.
RECHECK_DISPATCHED_AFTER_S = 5.0
# The relay's doorbell: a PostgreSQL NOTIFY channel, and the Redis channel of the same name.
WAKEUP_CHANNEL = "latency_lab_outbox"
# The states the relay still has business with; the others are settled.
ACTIVE_STATES = (OutboxState.PENDING.value, OutboxState.DISPATCHED.value)


@dataclass(frozen=True)
class SideEffect:
    """One thing a write causes: a task (from :mod:`latency_lab.service.tasks`) and its
    arguments."""

    task: Callable[..., Any]
    arguments: dict[str, Any]
    best_effort: bool = False  # analytics: when an inline call fails, it is not retried

    @property
    def name(self) -> str:
        return self.task.__name__


@dataclass(frozen=True)
class StoredEffect:
    """A side effect with its outbox identity: the idempotency key and the request's trace."""

    effect: SideEffect
    event_id: str
    trace_context: dict[str, str] = field(default_factory=dict)
    # PostgreSQL: the outbox's trigger has told the relay already (SQLite: the service must).
    relay_notified: bool = False

    @property
    def kwargs(self) -> dict[str, Any]:
        return {**self.effect.arguments, "event_id": self.event_id}


@dataclass(frozen=True)
class Settlement:
    """What a delivery attempt made of a row: its new state, why, and when to look again."""

    state: OutboxState
    error: str | None = None
    due_in_s: float | None = None


# --- the write's side --------------------------------------------------------------------------
def record(effects: Sequence[SideEffect], *, session: Session, hold_s: float) -> list[StoredEffect]:
    """Add one pending row per side effect to the session's transaction (the caller commits)."""
    if not effects:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # the relay's enqueue continues this request's trace
    notified = session.get_bind().dialect.name == "postgresql"
    stored = [StoredEffect(effect, uuid.uuid4().hex, carrier, notified) for effect in effects]
    now = utcnow()
    session.execute(
        insert(OutboxEvent),
        [
            {
                "event_id": item.event_id,
                "task": item.effect.name,
                "arguments": json.dumps(item.effect.arguments),
                "trace_context": json.dumps(carrier),
                "state": OutboxState.PENDING.value,
                "dispatches": 0,
                "created_at": now,
                "updated_at": now,
                "available_at": now + timedelta(seconds=hold_s),
            }
            for item in stored
        ],
    )
    return stored


def settle(settlements: Mapping[str, Settlement], *, session: Session) -> None:
    """Record the request's own delivery attempt: one UPDATE per distinct settlement."""
    groups: dict[Settlement, list[str]] = defaultdict(list)
    for event_id, settlement in settlements.items():
        groups[settlement].append(event_id)
    for settlement, event_ids in groups.items():
        mark(
            event_ids,
            settlement.state,
            session=session,
            error=settlement.error,
            due_in_s=settlement.due_in_s,
        )


def mark(
    event_ids: Iterable[str],
    state: OutboxState,
    *,
    session: Session,
    from_states: Sequence[OutboxState] | None = (OutboxState.PENDING,),
    error: str | None = None,
    due_in_s: float | None = None,
) -> int:
    """Move rows (still in one of ``from_states``; ``None``: any) to ``state``; rows changed.

    Moving to ``dispatched`` counts a dispatch. The ``from_states`` guard keeps a late writer
    from undoing a later state: a job that delivered before its request marked it dispatched.
    """
    ids = list(event_ids)
    if not ids:
        return 0
    now = utcnow()
    values: dict[str, Any] = {"state": state.value, "updated_at": now}
    if state is OutboxState.DISPATCHED:
        values["dispatches"] = OutboxEvent.dispatches + 1
    if error is not None:
        values["last_error"] = error[:300]
    if due_in_s is not None:
        values["available_at"] = now + timedelta(seconds=due_in_s)
    statement = update(OutboxEvent).where(OutboxEvent.event_id.in_(ids))
    if from_states is not None:
        statement = statement.where(OutboxEvent.state.in_([s.value for s in from_states]))
    result = session.execute(
        statement.values(**values).execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount)


def mark_delivered(event_id: str, *, session: Session) -> int:
    """The job ran: whatever the row said before (the relay may have thought it lost)."""
    return mark([event_id], OutboxState.DELIVERED, session=session, from_states=None)


# --- the relay's side --------------------------------------------------------------------------
def claim_due(*, session: Session, limit: int, lease_s: float) -> list[OutboxEvent]:
    """Pending rows whose hold is over, each leased for ``lease_s`` (a second relay skips them).

    Commits. A row whose dispatch then fails (Redis still down) is simply due again after the
    lease.
    """
    now = utcnow()
    candidates = session.execute(
        select(OutboxEvent.id, OutboxEvent.available_at)
        .where(OutboxEvent.state == OutboxState.PENDING.value, OutboxEvent.available_at <= now)
        .order_by(OutboxEvent.available_at, OutboxEvent.id)
        .limit(limit)
    ).all()
    leased_until = now + timedelta(seconds=lease_s)
    claimed = [row_id for row_id, due in candidates if _lease(session, row_id, due, leased_until)]
    session.commit()
    if not claimed:
        return []
    return list(
        session.scalars(
            select(OutboxEvent).where(OutboxEvent.id.in_(claimed)).order_by(OutboxEvent.id)
        )
    )


def _lease(session: Session, row_id: int, due: Any, until: Any) -> bool:
    result = session.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.id == row_id,
            OutboxEvent.state == OutboxState.PENDING.value,
            OutboxEvent.available_at == due,
        )
        .values(available_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount) == 1


def due_checks(*, session: Session, limit: int) -> list[OutboxEvent]:
    """Dispatched rows due a check that their job still exists."""
    return list(
        session.scalars(
            select(OutboxEvent)
            .where(
                OutboxEvent.state == OutboxState.DISPATCHED.value,
                OutboxEvent.available_at <= utcnow(),
            )
            .order_by(OutboxEvent.available_at, OutboxEvent.id)
            .limit(limit)
        )
    )


def postpone(event_ids: Iterable[str], *, session: Session, due_in_s: float) -> None:
    """Look at these (dispatched, still queued or running) rows again later."""
    ids = list(event_ids)
    if ids:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.event_id.in_(ids))
            .values(available_at=utcnow() + timedelta(seconds=due_in_s))
            .execution_options(synchronize_session=False)
        )


def next_due(*, session: Session) -> datetime | None:
    """When the relay next has business with a row (pending or dispatched); None: never."""
    due: datetime | None = session.scalar(
        select(func.min(OutboxEvent.available_at)).where(OutboxEvent.state.in_(ACTIVE_STATES))
    )
    return due


def prune_delivered(*, session: Session, older_than: datetime, batch: int) -> int:
    """Delete up to ``batch`` rows delivered before ``older_than``, oldest first; rows deleted.

    One statement; the caller commits. Failed and dropped rows are kept: they are what a user
    inspects (``latency-lab outbox``).
    """
    oldest = (
        select(OutboxEvent.id)
        .where(
            OutboxEvent.state == OutboxState.DELIVERED.value,
            OutboxEvent.updated_at < older_than,
        )
        .order_by(OutboxEvent.id)
        .limit(batch)
    )
    result = session.execute(
        delete(OutboxEvent)
        .where(OutboxEvent.id.in_(oldest.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount)


def arguments_of(row: OutboxEvent) -> dict[str, Any]:
    """The task's keyword arguments, idempotency key included."""
    arguments: dict[str, Any] = json.loads(row.arguments)
    return {**arguments, "event_id": row.event_id}


def trace_context_of(row: OutboxEvent) -> dict[str, str]:
    try:
        carrier = json.loads(row.trace_context or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in carrier.items()} if isinstance(carrier, dict) else {}


def counts(*, session: Session) -> dict[str, int]:
    """Rows per state, every state present (zeros included)."""
    rows = session.execute(select(OutboxEvent.state, func.count()).group_by(OutboxEvent.state))
    found: dict[str, int] = {str(state): int(count) for state, count in rows}
    return {state.value: int(found.get(state.value, 0)) for state in OutboxState}


# --- the relay's doorbell ----------------------------------------------------------------------
def wakeup_payload(due: datetime) -> str:
    """A notification's payload: when the relay should look (naive UTC, ISO 8601)."""
    return due.isoformat(timespec="microseconds")


def due_of(payload: str) -> datetime:
    """The time a notification announces; an unreadable one means now."""
    try:
        return datetime.fromisoformat(payload)
    except ValueError:
        return utcnow()


# PostgreSQL: a statement-level trigger per event (transition tables allow only one event each)
# notifies the earliest ``available_at`` among the rows it inserted or changed that the relay
# still has business with. NOTIFY is transactional: sent on commit, never for a rolled-back row.
_WAKEUP_TRIGGER_DDL = (
    f"""
CREATE OR REPLACE FUNCTION latency_lab_outbox_wakeup() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE due timestamp;
BEGIN
    SELECT min(available_at) INTO due FROM changed
     WHERE state IN ('{OutboxState.PENDING.value}', '{OutboxState.DISPATCHED.value}');
    IF due IS NOT NULL THEN
        PERFORM pg_notify('{WAKEUP_CHANNEL}', to_char(due, 'YYYY-MM-DD"T"HH24:MI:SS.US'));
    END IF;
    RETURN NULL;
END $$
""",
    *(
        f"""
CREATE OR REPLACE TRIGGER outbox_wakes_relay_on_{event.lower()}
AFTER {event} ON {OutboxEvent.__tablename__} REFERENCING NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION latency_lab_outbox_wakeup()
"""
        for event in ("INSERT", "UPDATE")
    ),
)


def install_wakeup_trigger(engine: Engine) -> bool:
    """Create (or replace) the outbox's NOTIFY trigger; False when the database is not
    PostgreSQL. Idempotent; concurrent callers take turns (an advisory lock)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                           {"name": WAKEUP_CHANNEL})  # fmt: skip
        for statement in _WAKEUP_TRIGGER_DDL:
            connection.exec_driver_sql(statement)
    return True
