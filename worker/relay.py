"""The outbox relay: ``python -m latency_lab.worker.relay``, one process that ``latency-lab up``
starts.

It makes sure every side effect stored in the transactional outbox
(:mod:`latency_lab.service.outbox`) reaches RQ, whatever happened to the request that stored it or
to Redis since. A pass

1. **dispatches** pending rows whose hold is over: their request found Redis down, or an inline
   email or enrichment failed and is now retried by a worker (or the request died before it
   could deliver them). Each is enqueued as the same RQ job its request would have enqueued,
   continuing the request's trace, and marked ``dispatched``;
2. **checks** dispatched rows now and then: a job that Redis no longer knows (a Redis restart
   loses every queue: the lab's Redis keeps nothing on disk) is dispatched again; a job RQ gave
   up on (its failed-job registry) marks its row ``failed``; a finished job whose row still says
   ``dispatched`` marks it ``delivered``.

It does not poll. It sleeps until the earliest row it has business with is due (one statement
tells it when), or until it is told of new work (:mod:`latency_lab.worker.wakeups`: PostgreSQL
``LISTEN``, or Redis on SQLite), and looks anyway every ``SAFETY_NET_S`` in case a notification
was lost; every ``DEAF_POLL_S`` while it cannot listen. An idle relay sends one statement every
``SAFETY_NET_S``. Now and then it deletes delivered rows older than the retention window
(``LAB_OUTBOX_RETENTION_HOURS``), so the table stays bounded.

With Redis down, rows simply wait; with the database down, so does the relay. Dispatching twice
is safe: the job id is derived from the event, and the provider honours the event's
idempotency key.

Usage::

    relay = OutboxRelay(sessions=sessions, queue=queue, tracer=tracer, wakeups=listener)
    relay.run_once()        # one pass; what it did
    relay.run(stop_event)   # until the event is set
    relay.looks             # why it looked, counted: notified, due, safety_net, deaf_poll, ...
"""

from __future__ import annotations

import enum
import logging
import math
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

import redis
from opentelemetry import propagate, trace
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from latency_lab import telemetry
from latency_lab.core.settings import Settings, settings_or_exit
from latency_lab.core.shared_state import connect_redis
from latency_lab.service import offload, outbox, tasks
from latency_lab.service.db import build_engine, create_schema, session_factory
from latency_lab.service.models import OutboxEvent, OutboxState, utcnow
from latency_lab.worker.wakeups import Deaf, Wakeups, listener_for

log = logging.getLogger(__name__)

BATCH = 200
LEASE_S = 10.0  # a claimed row whose dispatch failed is due again after this
GAVE_UP = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
SAFETY_NET_S = 30.0  # a listening relay looks this often anyway: a notification may be lost
DEAF_POLL_S = 1.0  # a relay that cannot listen (Redis or PostgreSQL away) looks this often
MIN_GAP_S = 0.5  # rows due later (holds, rechecks, a backlog): at most two looks a second
URGENT_GAP_S = 0.05  # a row announced as due now: looked at at once, at most 20 times a second
WAIT_SLICE_S = 1.0  # a wait returns this often, to see whether the relay should stop
PRUNE_BATCH = 1000
PRUNE_BATCHES_PER_LOOK = 10  # a long backlog takes several looks: the outbox is served between
PRUNE_EVERY_MAX_S = 600.0  # prune every quarter of the retention window, at least every 10 min


class Look(enum.StrEnum):
    """Why the relay looked at the outbox."""

    START = "start"
    NOTIFIED = "notified"  # told of new work
    DUE = "due"  # the earliest row it knew of came due (a hold, a lease, a recheck)
    SAFETY_NET = "safety_net"  # nothing heard for SAFETY_NET_S
    DEAF_POLL = "deaf_poll"  # not listening: polling
    PRUNE = "prune"  # time to delete old delivered rows


@dataclass
class RelayPass:
    """What one pass (or one look: a pass only when something was due) did."""

    dispatched: int = 0
    redispatched: int = 0
    failed: int = 0
    delivered: int = 0
    pruned: int = 0
    next_due: datetime | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class Schedule:
    """When the relay looks next (monotonic seconds), and why."""

    due: float
    reason: Look
    prune_at: float
    looked: float

    def next_look(self, ceiling_s: float, ceiling: Look) -> tuple[float, Look]:
        return min(
            (self.due, self.reason),
            (self.looked + ceiling_s, ceiling),
            (self.prune_at, Look.PRUNE),
            key=lambda candidate: candidate[0],
        )

    def hear(self, dues: Sequence[datetime], min_gap_s: float) -> None:
        """Notifications: look when the earliest is due, but not sooner than ``min_gap_s`` after
        the last look (``URGENT_GAP_S`` for a row due now: the request is waiting for nothing,
        but the side effect is)."""
        now = time.monotonic()
        for due in dues:
            when = _monotonic(due)
            gap = URGENT_GAP_S if when <= now else min_gap_s
            at = max(when, self.looked + gap)
            if at < self.due:
                self.due, self.reason = at, Look.NOTIFIED

    def expect(self, due: datetime | None, min_gap_s: float) -> None:
        """The earliest row is due then (None: no row): look again then, but not sooner than
        ``min_gap_s`` after this look (a backlog drains a batch at a time)."""
        at = math.inf if due is None else max(_monotonic(due), self.looked + min_gap_s)
        self.due, self.reason = at, Look.DUE


def _monotonic(due: datetime) -> float:
    """A naive UTC time as a ``time.monotonic()`` instant."""
    return time.monotonic() + (due - utcnow()).total_seconds()


class OutboxRelay:
    """Moves outbox rows to RQ and keeps their state honest."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        queue: Queue,
        tracer: trace.Tracer,
        wakeups: Wakeups | None = None,
        retention_s: float | None = None,
        batch: int = BATCH,
        lease_s: float = LEASE_S,
        safety_net_s: float = SAFETY_NET_S,
        deaf_poll_s: float = DEAF_POLL_S,
        min_gap_s: float = MIN_GAP_S,
    ) -> None:
        self._sessions = sessions
        self._queue = queue
        self._tracer = tracer
        self._wakeups: Wakeups = wakeups or Deaf()
        self._retention_s = retention_s
        self._batch = batch
        self._lease_s = lease_s
        self._safety_net_s = safety_net_s
        self._deaf_poll_s = deaf_poll_s
        self._min_gap_s = min_gap_s
        self.looks: Counter[Look] = Counter()

    @property
    def wakeups(self) -> Wakeups:
        return self._wakeups

    # --- the loop: sleep until something is due or heard ------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("outbox relay: dispatching to queue %r when told or due", self._queue.name)
        now = time.monotonic()
        prune_at = now if self._retention_s is not None else math.inf
        schedule = Schedule(due=now, reason=Look.START, prune_at=prune_at, looked=now)
        try:
            while not stop.is_set():
                at, reason = schedule.next_look(*self._ceiling())
                remaining = at - time.monotonic()
                if remaining > 0:
                    heard = self._wakeups.wait(min(WAIT_SLICE_S, remaining))
                    schedule.hear(heard, self._min_gap_s)
                    continue
                report = self.look(reason, schedule)
                if report.dispatched or report.redispatched or report.failed or report.pruned:
                    log.info("outbox relay (%s): %s", reason, report)
        finally:
            self._wakeups.close()

    def _ceiling(self) -> tuple[float, Look]:
        if self._wakeups.listening:
            return self._safety_net_s, Look.SAFETY_NET
        return self._deaf_poll_s, Look.DEAF_POLL

    def look(self, reason: Look, schedule: Schedule) -> RelayPass:
        """One statement to learn when the earliest row is due; a pass if that is now."""
        report = RelayPass()
        schedule.looked = time.monotonic()
        if self._retention_s is not None and schedule.looked >= schedule.prune_at:
            report.pruned = self._prune(report, self._retention_s)
            more = report.pruned == PRUNE_BATCH * PRUNE_BATCHES_PER_LOOK
            every_s = self._min_gap_s if more else min(self._retention_s / 4, PRUNE_EVERY_MAX_S)
            schedule.prune_at = schedule.looked + every_s
        due = self._next_due(report)
        if due is not None and due <= utcnow():
            report = self.run_once(report)
            due = self._next_due(report)
        if report.errors:  # the database or Redis is away: look again soon
            due = utcnow() + timedelta(seconds=self._deaf_poll_s)
        schedule.expect(due, self._min_gap_s)
        report.next_due = due
        self.looks[reason] += 1  # counted once done
        return report

    def _next_due(self, report: RelayPass) -> datetime | None:
        try:
            with self._sessions() as session:
                return outbox.next_due(session=session)
        except SQLAlchemyError as exc:
            report.errors.append(f"next_due: {type(exc).__name__}")
            log.warning("outbox relay: cannot read the outbox (%s)", exc)
            return None

    def _prune(self, report: RelayPass, retention_s: float) -> int:
        """Delete delivered rows older than the window: a statement (and a commit) per batch, up
        to ``PRUNE_BATCHES_PER_LOOK`` batches."""
        older_than = utcnow() - timedelta(seconds=retention_s)
        pruned = 0
        try:
            with self._sessions() as session:
                for _ in range(PRUNE_BATCHES_PER_LOOK):
                    deleted = outbox.prune_delivered(
                        session=session, older_than=older_than, batch=PRUNE_BATCH
                    )
                    session.commit()
                    pruned += deleted
                    if deleted < PRUNE_BATCH:
                        break
        except SQLAlchemyError as exc:
            report.errors.append(f"prune: {type(exc).__name__}")
            log.warning("outbox relay: pruning failed (%s)", exc)
        return pruned

    # --- a pass --------------------------------------------------------------------------------
    def run_once(self, report: RelayPass | None = None) -> RelayPass:
        report = report or RelayPass()
        for step in (self._dispatch_due, self._check_dispatched):
            try:
                step(report)
            except (SQLAlchemyError, redis.RedisError) as exc:  # down: try again next pass
                report.errors.append(f"{step.__name__}: {type(exc).__name__}")
                log.warning("outbox relay: %s failed (%s)", step.__name__, exc)
        return report

    # --- 1. pending rows -> RQ -------------------------------------------------------------
    def _dispatch_due(self, report: RelayPass) -> None:
        with self._sessions() as session:
            rows = outbox.claim_due(session=session, limit=self._batch, lease_s=self._lease_s)
            enqueued = []
            for row in rows:
                outcome = self._enqueue(row)
                if outcome.state != "queued":  # Redis still down: the rest wait for their lease
                    report.errors.append(f"dispatch: {outcome.detail}")
                    break
                enqueued.append(row.event_id)
            report.dispatched += outbox.mark(
                enqueued,
                OutboxState.DISPATCHED,
                session=session,
                due_in_s=outbox.RECHECK_DISPATCHED_AFTER_S,
            )
            session.commit()

    def _enqueue(self, row: OutboxEvent) -> offload.Outcome:
        task = tasks.TASKS.get(row.task)
        if task is None:
            return offload.Outcome(row.task, "failed", f"unknown task {row.task!r}")
        return offload.enqueue(
            task,
            outbox.arguments_of(row),
            queue=self._queue,
            tracer=self._tracer,
            outbox=True,
            parent=propagate.extract(outbox.trace_context_of(row)),
            dispatcher="relay",
        )

    # --- 2. dispatched rows: still known to RQ? ----------------------------------------------
    def _check_dispatched(self, report: RelayPass) -> None:
        with self._sessions() as session:
            rows = outbox.due_checks(session=session, limit=self._batch)
            if not rows:
                return
            found = Job.fetch_many(
                [offload.job_id_for(row.task, row.event_id) for row in rows],
                connection=self._queue.connection,
            )
            self._settle_checked(session, rows, found, report)
            session.commit()

    def _settle_checked(
        self,
        session: Session,
        rows: Sequence[OutboxEvent],
        found: Sequence[Job | None],
        report: RelayPass,
    ) -> None:
        verdicts: dict[str, list[str]] = defaultdict(list)
        for row, job in zip(rows, found, strict=True):
            verdicts[self._verdict(job)].append(row.event_id)
        was = (OutboxState.DISPATCHED,)
        report.redispatched += outbox.mark(
            verdicts["lost"], OutboxState.PENDING, session=session, from_states=was, due_in_s=0,
            error="its job vanished from Redis (restarted?): dispatched again",
        )  # fmt: skip
        report.failed += outbox.mark(
            verdicts["gave_up"], OutboxState.FAILED, session=session, from_states=was,
            error="RQ gave up after its retries: see the failed-job registry",
        )  # fmt: skip
        report.delivered += outbox.mark(
            verdicts["finished"], OutboxState.DELIVERED, session=session, from_states=was
        )
        outbox.postpone(
            verdicts["alive"], session=session, due_in_s=outbox.RECHECK_DISPATCHED_AFTER_S
        )

    @staticmethod
    def _verdict(job: Job | None) -> str:
        if job is None:
            # Never given up: a restart of Redis is no fault of the side effect, and each one
            # loses the whole backlog (a row can be lost again and again under sustained load).
            return "lost"
        status = job.get_status(refresh=False)
        if status in GAVE_UP:
            return "gave_up"
        if status == JobStatus.FINISHED:
            return "finished"
        return "alive"  # queued, scheduled for a retry, started, deferred: RQ has it


# --- the process ---------------------------------------------------------------------------------
def build_relay(settings: Settings) -> OutboxRelay:
    lab = telemetry.configure(
        "latency-lab-relay", role="relay", **settings.telemetry_options(), set_global=True
    )
    engine = build_engine(settings.resolved_database_url)
    create_schema(engine)  # the service creates it too; whichever starts first
    return relay_on(
        engine,
        settings.redis_url,
        tracer=lab.tracer,
        retention_s=settings.outbox_retention_hours * 3600,
    )


def relay_on(
    engine: Engine, redis_url: str | None, *, tracer: trace.Tracer, **options: Any
) -> OutboxRelay:
    """A relay on this database and Redis, woken as the process's is (``options``: the
    :class:`OutboxRelay` knobs, e.g. ``retention_s``, ``safety_net_s``)."""
    client = connect_redis(redis_url, socket_timeout_s=1.0, retries=1)
    return OutboxRelay(
        sessions=session_factory(engine),
        queue=Queue(offload.QUEUE_NAME, connection=client),
        tracer=tracer,
        wakeups=listener_for(engine, redis_url),
        **options,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(message)s")
    relay = build_relay(settings_or_exit("relay"))
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("outbox relay: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    relay.run(stop)


if __name__ == "__main__":
    main()
