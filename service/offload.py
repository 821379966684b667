"""Inline or enqueue: the ``async_offload`` toggle, decided in one function.

Before: the request calls the provider and waits (email, analytics, enrichment on the request
path). After: the request enqueues an RQ job (a couple of Redis commands) and answers; a worker
process makes the call. The enqueue is a producer span whose context the job carries, so the
job's span sits in the request's trace.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from rq import Queue, Retry

from service import jobs
from service.third_party import ThirdPartyError
from telemetry import vocabulary as v

log = logging.getLogger(__name__)

QUEUE_NAME = "side-effects"
RETRY = Retry(max=3, interval=[1, 2, 5])


@dataclass(frozen=True)
class Outcome:
    """What happened to one side effect: ``delivered``, ``queued`` or ``failed``."""

    task: str
    state: str
    detail: str | None = None
    job_id: str | None = None


def offload_or_call(
    task: Callable[..., Any], *, offload: bool, queue: Queue, tracer: trace.Tracer, **kwargs: Any
) -> Outcome:
    kwargs.setdefault("event_id", uuid.uuid4().hex)
    if offload:
        return _enqueue(task, queue=queue, tracer=tracer, **kwargs)
    try:
        task(**kwargs)
    except ThirdPartyError as exc:
        log.warning("inline %s failed: %s", task.__name__, exc)
        return Outcome(task.__name__, "failed", str(exc))
    return Outcome(task.__name__, "delivered")


def _enqueue(
    task: Callable[..., Any], *, queue: Queue, tracer: trace.Tracer, **kwargs: Any
) -> Outcome:
    attributes = {v.JOB_FUNC: f"{task.__module__}.{task.__name__}", v.JOB_QUEUE: queue.name}
    with tracer.start_as_current_span(
        v.SPAN_ENQUEUE, kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        meta = {jobs.TRACE_META_KEY: carrier, "enqueued_at_ns": time.time_ns()}
        try:
            job = queue.enqueue(
                task,
                kwargs=kwargs,
                meta=meta,
                retry=RETRY,
                job_id=f"{task.__name__}-{kwargs['event_id']}",
            )
        except Exception as exc:  # Redis down: reported, the request itself goes on
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            log.warning("could not enqueue %s: %s", task.__name__, exc)
            return Outcome(task.__name__, "failed", f"queue unavailable: {type(exc).__name__}")
        span.set_attribute(v.JOB_ID, job.id)
        return Outcome(task.__name__, "queued", job_id=job.id)
