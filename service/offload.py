"""Inline or enqueue: the ``async_offload`` toggle, decided in one function per kind of effect.

Before: the request calls the provider and waits (email, analytics, enrichment on the request
path). After: the request enqueues an RQ job (a couple of Redis commands) and answers; a worker
process makes the call. The enqueue is a producer span whose context the job carries, so the
job's span sits in the request's trace.

Two kinds of side effect:

* a write's (email, analytics and enrichment of a created or changed lead) are already stored in
  the transactional outbox (:mod:`latency_lab.service.outbox`) when :func:`deliver` runs. What it
  cannot deliver now stays there: Redis down (the relay enqueues it when Redis is back), or an
  inline email or enrichment that failed (retried by a worker). A failed inline analytics event is
  best-effort: dropped, and said so.
* a read's analytics event (:func:`offload_or_call`) is best-effort and stored nowhere: when it
  cannot be delivered or enqueued, the response says ``failed`` and the read goes on.

Redis that is known to be down (the shared-state poller says so) is not even tried: a request
pays no socket timeout for it. Enqueued jobs retry with backoff (``RETRY``); a job that fails
every attempt lands in RQ's failed-job registry.

When a write leaves work for the outbox relay (a row to check or to retry later), :func:`deliver`
tells the relay when, on SQLite: one ``PUBLISH`` on the relay's Redis channel. On PostgreSQL the
database tells it (a trigger's ``NOTIFY``), so the service sends nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, Status, StatusCode
from rq import Queue, Retry

from latency_lab.service import tasks
from latency_lab.service.models import OutboxState, utcnow
from latency_lab.service.outbox import (
    RECHECK_DISPATCHED_AFTER_S,
    RETRY_FAILED_CALL_AFTER_S,
    WAKEUP_CHANNEL,
    Settlement,
    StoredEffect,
    wakeup_payload,
)
from latency_lab.service.providers import ThirdPartyError
from latency_lab.telemetry import vocabulary as v

log = logging.getLogger(__name__)

QUEUE_NAME = "side-effects"
RETRY = Retry(max=3, interval=[1, 2, 5])
REDIS_DOWN = "queue unavailable (Redis unreachable)"
# The request settles its rows right after delivering: the relay comes this much later.
SETTLE_MARGIN_S = 0.1

Availability = Callable[[], bool]


@dataclass(frozen=True)
class Outcome:
    """What happened to one side effect: ``delivered``, ``queued``, ``pending`` or ``failed``."""

    task: str
    state: str
    detail: str | None = None
    job_id: str | None = None


def job_id_for(task_name: str, event_id: str) -> str:
    """One RQ job id per event: dispatching an event again replaces its job, never adds one."""
    return f"{task_name}-{event_id}"


# --- a read's best-effort event ------------------------------------------------------------
def offload_or_call(
    task: Callable[..., Any],
    *,
    offload: bool,
    queue: Queue,
    tracer: trace.Tracer,
    available: Availability = lambda: True,
    **kwargs: Any,
) -> Outcome:
    kwargs.setdefault("event_id", uuid.uuid4().hex)
    if not offload:
        return call_inline(task, kwargs)
    if not available():
        return Outcome(task.__name__, "failed", f"{REDIS_DOWN}; best-effort, not retried")
    return enqueue(task, kwargs, queue=queue, tracer=tracer)


# --- a write's stored effects --------------------------------------------------------------
def deliver(
    stored: Sequence[StoredEffect],
    *,
    offload: bool,
    queue: Queue,
    tracer: trace.Tracer,
    available: Availability,
) -> list[tuple[Outcome, Settlement]]:
    """Deliver a write's side effects now; each with how its outbox row should be settled."""
    if offload:
        results = [
            _enqueue_stored(item, queue=queue, tracer=tracer, available=available)
            for item in stored
        ]
    else:
        results = [_call_stored(item) for item in stored]
    if stored and not stored[0].relay_notified and available():
        _wake_relay([settlement for _, settlement in results], queue.connection)
    return results


def _wake_relay(settlements: Sequence[Settlement], client: redis.Redis) -> None:
    """SQLite cannot notify: tell the relay when the earliest row left to it is due, if any."""
    dues = [s.due_in_s for s in settlements if s.due_in_s is not None]
    if not dues:  # all delivered or dropped: nothing for the relay
        return
    due = utcnow() + timedelta(seconds=min(dues) + SETTLE_MARGIN_S)
    try:
        client.publish(WAKEUP_CHANNEL, wakeup_payload(due))
    except redis.RedisError as exc:  # the relay's safety-net poll finds the rows anyway
        log.warning("could not wake the outbox relay: %s", exc)


def _call_stored(item: StoredEffect) -> tuple[Outcome, Settlement]:
    outcome = call_inline(item.effect.task, item.kwargs)
    if outcome.state == "delivered":
        return outcome, Settlement(OutboxState.DELIVERED)
    if item.effect.best_effort:
        detail = f"{outcome.detail}; best-effort, not retried"
        return Outcome(outcome.task, "failed", detail), Settlement(OutboxState.DROPPED, detail)
    detail = f"{outcome.detail}; kept in the outbox, a worker retries it"
    settlement = Settlement(OutboxState.PENDING, outcome.detail, RETRY_FAILED_CALL_AFTER_S)
    return Outcome(outcome.task, "pending", detail), settlement


def _enqueue_stored(
    item: StoredEffect, *, queue: Queue, tracer: trace.Tracer, available: Availability
) -> tuple[Outcome, Settlement]:
    if available():
        outcome = enqueue(item.effect.task, item.kwargs, queue=queue, tracer=tracer, outbox=True)
    else:
        outcome = Outcome(item.effect.name, "failed", REDIS_DOWN)
    if outcome.state == "queued":
        return outcome, Settlement(OutboxState.DISPATCHED, due_in_s=RECHECK_DISPATCHED_AFTER_S)
    detail = f"{outcome.detail}; kept in the outbox, enqueued when Redis is back"
    return Outcome(outcome.task, "pending", detail), Settlement(
        OutboxState.PENDING, outcome.detail, due_in_s=0
    )


# --- the two ways ----------------------------------------------------------------------------
def call_inline(task: Callable[..., Any], kwargs: dict[str, Any]) -> Outcome:
    """Before: the provider is called on the request path (bounded by the world's timeout)."""
    try:
        task(**kwargs)
    except ThirdPartyError as exc:
        log.warning("inline %s failed: %s", task.__name__, exc)
        return Outcome(task.__name__, "failed", str(exc))
    return Outcome(task.__name__, "delivered")


def enqueue(
    task: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    queue: Queue,
    tracer: trace.Tracer,
    outbox: bool = False,
    parent: Context | None = None,
    dispatcher: str = "request",
) -> Outcome:
    """After: an RQ job, in a producer span (under ``parent`` when given) that the job continues."""
    attributes = {
        v.JOB_FUNC: f"{task.__module__}.{task.__name__}",
        v.JOB_QUEUE: queue.name,
        v.JOB_DISPATCHER: dispatcher,
    }
    with tracer.start_as_current_span(
        v.SPAN_ENQUEUE, context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        meta: dict[str, Any] = {tasks.TRACE_META_KEY: carrier, "enqueued_at_ns": time.time_ns()}
        if outbox:
            meta[tasks.OUTBOX_META_KEY] = kwargs["event_id"]
        try:
            with suppress_instrumentation():  # RQ's Redis commands: the enqueue span says it all
                job = queue.enqueue(
                    task,
                    kwargs=kwargs,
                    meta=meta,
                    retry=RETRY,
                    job_id=job_id_for(task.__name__, kwargs["event_id"]),
                )
        except Exception as exc:  # Redis down: reported, the request itself goes on
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            log.warning("could not enqueue %s: %s", task.__name__, exc)
            return Outcome(task.__name__, "failed", f"queue unavailable: {type(exc).__name__}")
        span.set_attribute(v.JOB_ID, job.id)
        return Outcome(task.__name__, "queued", job_id=job.id)
