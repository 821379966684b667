"""The outbox relay: ``python -m latency_lab.worker.relay``, one process that ``latency-lab up``
starts.

It makes sure every side effect stored in the transactional outbox
(:mod:`latency_lab.service.outbox`) reaches RQ, whatever happened to the request that stored it or
to Redis since. Every ``INTERVAL_S`` it

1. **dispatches** pending rows whose hold is over: their request found Redis down, or an inline
   email or enrichment failed and is now retried by a worker (or the request died before it
   could deliver them). Each is enqueued as the same RQ job its request would have enqueued,
   continuing the request's trace, and marked ``dispatched``;
2. **checks** dispatched rows now and then: a job that Redis no longer knows (a Redis restart
   loses every queue: the lab's Redis keeps nothing on disk) is dispatched again; a job RQ gave
   up on (its failed-job registry) marks its row ``failed``; a finished job whose row still says
   ``dispatched`` marks it ``delivered``.

With Redis down, rows simply wait; with the database down, so does the relay. Dispatching twice
is safe: the job id is derived from the event, and the provider honours the event's
idempotency key.

Usage::

    relay = OutboxRelay(sessions=sessions, queue=queue, tracer=tracer)
    relay.run_once()        # one pass; what it did
    relay.run(stop_event)   # until the event is set
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import redis
from opentelemetry import propagate, trace
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from latency_lab import telemetry
from latency_lab.core.settings import Settings, settings_or_exit
from latency_lab.core.shared_state import connect_redis
from latency_lab.service import offload, outbox, tasks
from latency_lab.service.db import build_engine, create_schema, session_factory
from latency_lab.service.models import OutboxEvent, OutboxState

log = logging.getLogger(__name__)

INTERVAL_S = 0.5
BATCH = 200
LEASE_S = 10.0  # a claimed row whose dispatch failed is due again after this
GAVE_UP = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


@dataclass
class RelayPass:
    """What one pass did."""

    dispatched: int = 0
    redispatched: int = 0
    failed: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)


class OutboxRelay:
    """Moves outbox rows to RQ and keeps their state honest."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        queue: Queue,
        tracer: trace.Tracer,
        batch: int = BATCH,
        lease_s: float = LEASE_S,
    ) -> None:
        self._sessions = sessions
        self._queue = queue
        self._tracer = tracer
        self._batch = batch
        self._lease_s = lease_s

    def run(self, stop: threading.Event, interval_s: float = INTERVAL_S) -> None:
        log.info("outbox relay: dispatching to queue %r every %.1f s", self._queue.name, interval_s)
        while not stop.is_set():
            report = self.run_once()
            if report.dispatched or report.redispatched or report.failed:
                log.info("outbox relay: %s", report)
            stop.wait(interval_s)

    def run_once(self) -> RelayPass:
        report = RelayPass()
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
    client = connect_redis(settings.redis_url, socket_timeout_s=1.0, retries=1)
    return OutboxRelay(
        sessions=session_factory(engine),
        queue=Queue(offload.QUEUE_NAME, connection=client),
        tracer=lab.tracer,
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
