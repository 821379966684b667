"""The side effects the article moves to a queue, as RQ jobs, and the job class that traces them.

Each task takes IDs (never ORM objects) and an ``event_id`` used as the provider's idempotency
key. The same functions run inline in a request (``async_offload`` off) or in an ``rq`` worker
process (on); :func:`latency_lab.service.offload.offload_or_call` decides which. A task finds its
database and HTTP client through the :class:`TaskContext` its process bound at start-up.

:class:`TracedJob` continues the request's trace in the worker: the enqueue span's context
travels in ``job.meta`` and the job runs inside a ``rq.job`` consumer span beneath it. A job
dispatched from the transactional outbox (:mod:`latency_lab.service.outbox`) names its row in
``job.meta`` and marks it delivered once it has run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry.trace import SpanKind
from rq.job import Job
from sqlalchemy.orm import Session, sessionmaker

from latency_lab.service import outbox
from latency_lab.service.models import Lead, User, utcnow
from latency_lab.service.providers import ThirdPartyClient
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.profiles import ProfileRun

log = logging.getLogger(__name__)

TRACE_META_KEY = "otel"
OUTBOX_META_KEY = "outbox_event"  # the event_id of the outbox row a job delivers


@dataclass(frozen=True)
class TaskContext:
    """What tasks need in this process: bound once at start-up, then only read.

    A worker process runs several jobs at once on threads (``worker/process.py``), all sharing
    it, which is safe: ``sessions`` makes a new session (and takes its own pooled connection)
    per call, ``third_party``'s httpx client and OpenTelemetry's tracers are thread-safe, and
    every other part is immutable.
    """

    sessions: sessionmaker[Session]
    third_party: ThirdPartyClient
    mode: v.CallMode
    flush: Callable[[], Any] = lambda: None


_context: TaskContext | None = None


def bind(context: TaskContext) -> None:
    global _context
    _context = context


def context() -> TaskContext:
    if _context is None:
        raise RuntimeError(
            "no TaskContext bound: start workers with `python -m latency_lab.worker.process`"
        )
    return _context


# --- tasks ------------------------------------------------------------------------------------
def send_owner_email(lead_id: int, event_id: str) -> dict[str, Any]:
    """Tell the lead's owner about a new or changed lead."""
    ctx = context()
    with ctx.sessions() as session:
        lead = session.get(Lead, lead_id)
        if lead is None:
            return {"skipped": f"lead {lead_id} no longer exists"}
        owner = session.get(User, lead.owner_id)
        if owner is None:
            return {"skipped": f"lead {lead_id} has no owner"}
        payload = {
            "to": owner.email,
            "lead_id": lead.id,
            "template": "lead-update",
            "subject": f"Lead update: {lead.company} ({lead.status})",
        }
    return ctx.third_party.call(v.Provider.EMAIL, payload, mode=ctx.mode, idempotency_key=event_id)


def track_event(
    name: str, event_id: str, properties: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Send one analytics event (page views, status changes, sign-ups)."""
    ctx = context()
    payload = {"event": name, "properties": properties or {}}
    return ctx.third_party.call(
        v.Provider.ANALYTICS, payload, mode=ctx.mode, idempotency_key=event_id
    )


def enrich_lead(lead_id: int, event_id: str) -> dict[str, Any]:
    """Fetch firmographics for a lead and write them back."""
    ctx = context()
    with ctx.sessions() as session:
        lead = session.get(Lead, lead_id)
        if lead is None:
            return {"skipped": f"lead {lead_id} no longer exists"}
        payload = {"lead_id": lead.id, "company": lead.company, "email": lead.email}
        result = ctx.third_party.call(
            v.Provider.ENRICHMENT, payload, mode=ctx.mode, idempotency_key=event_id
        )
        lead.industry = str(result.get("industry") or "")[:80] or None
        lead.company_size = str(result.get("company_size") or "")[:40] or None
        lead.enriched_at = utcnow()
        session.commit()
    return result


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    task.__name__: task for task in (send_owner_email, track_event, enrich_lead)
}
"""The tasks by name, as the outbox stores them."""


# --- tracing ----------------------------------------------------------------------------------
class TracedJob(Job):
    """An RQ job that runs inside a consumer span continuing the enqueuing request's trace."""

    def perform(self) -> Any:
        parent = propagate.extract(self.meta.get(TRACE_META_KEY) or {})
        tracer = trace.get_tracer("latency-lab.worker")
        attributes: dict[str, str | int] = {
            v.JOB_ID: self.id,
            v.JOB_FUNC: self.func_name or "",
            v.JOB_QUEUE: self.origin or "",
        }
        enqueued_at = self.meta.get("enqueued_at_ns")
        if enqueued_at is not None:
            attributes[v.JOB_ENQUEUED_AT] = int(enqueued_at)
        configuration = baggage.get_baggage(v.CONFIG_KEY, parent)
        if configuration:  # the configuration the enqueuing request ran under
            attributes[v.CONFIG_KEY] = str(configuration)
        profiled = baggage.get_baggage(v.PROFILE, parent) == "on"  # its request was profiled
        try:
            with tracer.start_as_current_span(
                v.SPAN_JOB, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
            ) as span:
                run = ProfileRun(f"job {self.func_name}").start() if profiled else None
                try:
                    result = super().perform()
                finally:
                    if run is not None:
                        run.stop_onto(span)
                self._mark_outbox_delivered()
                return result
        finally:
            # A process whose jobs run in a forked work horse (it leaves with os._exit) binds a
            # flush here, or the job's spans are lost; the lab's threaded worker binds none.
            if _context is not None:
                _context.flush()

    def _mark_outbox_delivered(self) -> None:
        event_id = self.meta.get(OUTBOX_META_KEY)
        if not event_id or _context is None:
            return
        try:
            with _context.sessions() as session:
                outbox.mark_delivered(str(event_id), session=session)
                session.commit()
        except Exception:  # the side effect happened: the relay settles the row from RQ's status
            log.warning("could not mark outbox event %s delivered", event_id, exc_info=True)
