"""Real OpenTelemetry SDK traces shaped like the lab's, for a trace store the dashboard can read.

Each request is built the way the lab records it: the edge's server span, its HTTP client span,
the service's server span beneath (with the accounting attributes the trace store summarises),
database spans with their statements and ORM relationships, third-party calls, and for an
offloaded call the enqueue span with the worker's ``rq.job`` span beneath it. N+1 findings come
from the real detector. Each process is a :class:`tests.telemetry.factories.RecordingProvider`,
the tests' one span factory. Spans are exported through :meth:`TraceStore.write_spans`, so the
rows are exactly what the exporter would write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Span, SpanKind

from latency_lab.core.toggles import Toggles
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.nplusone import Finding, StatementRecord, detect_n_plus_one
from latency_lab.telemetry.store import TraceStore
from tests.telemetry.factories import MS, RecordingProvider

STATEMENT_MS = 2.5
LEADS_PAGE = "SELECT leads.id, leads.company FROM leads ORDER BY leads.id LIMIT 10 OFFSET 0"
LAZY = {
    "Lead.owner": "SELECT users.id, users.name FROM users WHERE ? = users.id",
    "Lead.tags": "SELECT tags.id, tags.name FROM tags, lead_tags WHERE ? = lead_tags.lead_id",
    "Lead.metadata_entries": "SELECT lead_metadata.key FROM lead_metadata "
    "WHERE ? = lead_metadata.lead_id",
}
EAGER = (
    "SELECT leads.id, users.id, tags.id, lead_metadata.key FROM leads "
    "LEFT OUTER JOIN users ON users.id = leads.owner_id LIMIT 10"
)


class LabTraces:
    """Builds lab-shaped traces, clocked explicitly, and writes them to a store."""

    def __init__(self) -> None:
        self.edge = RecordingProvider("latency-lab-edge", "edge")
        self.service = RecordingProvider("latency-lab-service", "service")
        self.worker = RecordingProvider("latency-lab-worker", "worker")

    # --- requests ------------------------------------------------------------------------------
    def list_request(self, start_ns: int, toggles: Toggles, *, leads: int = 10) -> str:
        """``GET /api/leads``: 1 + 3N lazy statements with eager loading off, 1 with it on."""
        edge, service = self._front(start_ns, toggles, "GET", "/api/leads", "/api/leads")
        clock = start_ns + 2 * MS
        statements: list[tuple[str, str | None]]
        if toggles.eager_loading:
            statements = [(EAGER, None)]
        else:
            statements = [(LEADS_PAGE, None)] + [
                (sql, relationship) for _ in range(leads) for relationship, sql in LAZY.items()
            ]
        records = []
        for sql, relationship in statements:
            self._database(service, clock, sql, relationship)
            records.append(StatementRecord(sql.replace("?", "7"), STATEMENT_MS, relationship))
            clock += 3 * MS
        findings = detect_n_plus_one(records, threshold=5)
        self._finish(service, edge, clock + MS, statements=len(statements), findings=findings)
        return _trace_id(service)

    def create_request(self, start_ns: int, toggles: Toggles) -> str:
        """``POST /api/leads``: two statements, then three side effects inline or enqueued."""
        edge, service = self._front(start_ns, toggles, "POST", "/api/leads", "/api/leads")
        clock = start_ns + 2 * MS
        for sql in ("SELECT users.id FROM users WHERE users.id = 3", "INSERT INTO leads VALUES"):
            self._database(service, clock, sql, None)
            clock += 3 * MS
        ext_ms, jobs = 0.0, 0
        for provider in v.Provider:
            if toggles.async_offload:
                self._enqueue_and_run(service, clock, provider)
                clock += MS
                jobs += 1
            else:
                self._third_party(service, clock, provider, 20)
                clock += 21 * MS
                ext_ms += 20
        self._finish(
            service,
            edge,
            clock + MS,
            statements=2,
            ext_ms=ext_ms,
            ext_calls=3 - jobs,
            jobs=jobs,
            status=201,
        )
        return _trace_id(service)

    def edge_hit(self, start_ns: int, toggles: Toggles, path: str = "/api/leads") -> str:
        """A public GET the edge answered from its cache: nothing behind it ran."""
        span = self.edge.tracer.start_span(
            v.SPAN_EDGE,
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes=_http("GET", "/<path:path>", path, 200)
            | _configuration(toggles)
            | {
                v.CACHE_LAYER: "edge",
                v.CACHE_OUTCOME: "hit",
                v.REQ_CACHE_HITS_PREFIX + "edge": 1,
                v.REQ_CACHE_MISSES_PREFIX + "edge": 0,
                v.REQ_DB_STATEMENTS: 0,
                v.REQ_DB_TIME_MS: 0.0,
                v.REQ_EXT_CALLS: 0,
                v.REQ_EXT_TIME_MS: 0.0,
                v.REQ_JOBS_ENQUEUED: 0,
            },
        )
        span.end(end_time=start_ns + MS)
        return _trace_id(span)

    # --- parts of a request ------------------------------------------------------------------
    def _front(
        self, start_ns: int, toggles: Toggles, method: str, route: str, path: str
    ) -> tuple[tuple[Span, Span], Span]:
        edge = self.edge.tracer.start_span(
            v.SPAN_EDGE,
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes=_http(method, "/<path:path>", path, 200)
            | _configuration(toggles)
            | {
                v.CACHE_LAYER: "edge",
                v.REQ_CACHE_HITS_PREFIX + "edge": 0,
                v.REQ_CACHE_MISSES_PREFIX + "edge": int(toggles.edge_cache),
            },
        )
        client = self.edge.tracer.start_span(
            method,
            context=trace.set_span_in_context(edge),
            kind=SpanKind.CLIENT,
            start_time=start_ns + MS // 2,
        )
        service = self.service.tracer.start_span(
            f"{method} {route}",
            context=trace.set_span_in_context(client),
            kind=SpanKind.SERVER,
            start_time=start_ns + MS,
            attributes=_http(method, route, path, 200)
            | _configuration(toggles)
            | {v.REQ_FRONT_DOOR: False},  # it came through the edge (Via)
        )
        return (edge, client), service

    def _finish(
        self,
        service: Span,
        front: tuple[Span, Span],
        end_ns: int,
        *,
        statements: int,
        findings: Sequence[Finding] = (),
        ext_ms: float = 0.0,
        ext_calls: int = 0,
        jobs: int = 0,
        status: int = 200,
    ) -> None:
        accounting = {
            v.REQ_DB_STATEMENTS: statements,
            v.REQ_DB_TIME_MS: statements * STATEMENT_MS,
            v.REQ_EXT_CALLS: ext_calls,
            v.REQ_EXT_TIME_MS: ext_ms,
            v.REQ_JOBS_ENQUEUED: jobs,
        }
        service.set_attributes(accounting | {"http.response.status_code": status})
        if findings:
            service.set_attribute(v.REQ_N_PLUS_ONE, Finding.dumps(findings))
        service.end(end_time=end_ns)
        edge, client = front
        client.end(end_time=end_ns + MS // 2)
        # The edge copies the service's accounting from Server-Timing (findings stay behind).
        edge.set_attributes(accounting | {"http.response.status_code": status})
        edge.end(end_time=end_ns + MS)

    def _database(self, parent: Span, start_ns: int, sql: str, relationship: str | None) -> None:
        attributes: dict[str, Any] = {"db.statement": sql, "db.system": "sqlite"}
        if relationship:
            attributes[v.ORM_RELATIONSHIP] = relationship
        span = self.service.tracer.start_span(
            f"{sql.split()[0]} lab.db",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            start_time=start_ns,
            attributes=attributes,
        )
        span.end(end_time=start_ns + int(STATEMENT_MS * MS))

    def _third_party(
        self,
        parent: Span,
        start_ns: int,
        provider: v.Provider,
        duration_ms: float,
        process: RecordingProvider | None = None,
    ) -> None:
        span = (process or self.service).tracer.start_span(
            v.third_party_span_name(provider),
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            start_time=start_ns,
            attributes={
                v.THIRD_PARTY_PROVIDER: provider.value,
                v.THIRD_PARTY_MODE: "offloaded" if process else "inline",
            },
        )
        span.end(end_time=start_ns + int(duration_ms * MS))

    def _enqueue_and_run(self, parent: Span, start_ns: int, provider: v.Provider) -> None:
        job_id = f"{provider.value}-{start_ns}"
        enqueue = self.service.tracer.start_span(
            v.SPAN_ENQUEUE,
            context=trace.set_span_in_context(parent),
            kind=SpanKind.PRODUCER,
            start_time=start_ns,
            attributes={
                v.JOB_FUNC: f"latency_lab.service.tasks.{provider.value}_task",
                v.JOB_QUEUE: "side-effects",
                v.JOB_ID: job_id,
            },
        )
        enqueue.end(end_time=start_ns + MS // 2)
        job_start = start_ns + 30 * MS  # waited 30 ms in the queue, after the response
        job = self.worker.tracer.start_span(
            v.SPAN_JOB,
            context=trace.set_span_in_context(enqueue),
            kind=SpanKind.CONSUMER,
            start_time=job_start,
            attributes={
                v.JOB_ID: job_id,
                v.JOB_FUNC: f"latency_lab.service.tasks.{provider.value}_task",
                v.JOB_QUEUE: "side-effects",
                v.JOB_ENQUEUED_AT: start_ns,
            },
        )
        self._third_party(job, job_start + MS, provider, 40, process=self.worker)
        job.end(end_time=job_start + 42 * MS)

    # --- output --------------------------------------------------------------------------------
    def spans(self) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        for process in (self.edge, self.service, self.worker):
            out.extend(process.take())
        return out

    def write(self, store: TraceStore) -> None:
        store.write_spans(self.spans())
        for process in (self.edge, self.service, self.worker):
            store.record_process_stats(
                service=process.service, role=process.role, exported=1, dropped=0
            )


@dataclass(frozen=True)
class Workshop:
    """What :func:`workshop` recorded: configurations and notable trace ids."""

    baseline: Toggles
    eager: Toggles
    all_on: Toggles
    lazy_list: str
    inline_create: str
    offloaded_create: str
    leads: int


def workshop(store: TraceStore, *, leads: int = 10, now_ns: int | None = None) -> Workshop:
    """A workshop's first minutes: all off, then eager loading, then everything on."""
    now_ns = now_ns or time.time_ns()
    traces = LabTraces()
    baseline, eager, all_on = Toggles(), Toggles(eager_loading=True), Toggles.all_on()
    start = now_ns - 9 * 60_000 * MS
    lazy = [traces.list_request(start + i * 300 * MS, baseline, leads=leads) for i in range(6)]
    inline = traces.create_request(start + 2_000 * MS, baseline)
    start = now_ns - 6 * 60_000 * MS
    for i in range(6):
        traces.list_request(start + i * 100 * MS, eager, leads=leads)
    start = now_ns - 3 * 60_000 * MS
    for i in range(6):
        traces.edge_hit(start + i * 20 * MS, all_on)
    traces.list_request(start + 200 * MS, all_on, leads=leads)
    offloaded = traces.create_request(start + 400 * MS, all_on)
    traces.write(store)
    return Workshop(baseline, eager, all_on, lazy[0], inline, offloaded, leads)


def _trace_id(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def _http(method: str, route: str, path: str, status: int) -> dict[str, Any]:
    return {
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "http.response.status_code": status,
    }


def _configuration(toggles: Toggles) -> dict[str, Any]:
    attributes: dict[str, Any] = {v.CONFIG_KEY: toggles.label()}
    for name, enabled in toggles.model_dump().items():
        attributes[v.TOGGLE_PREFIX + name] = enabled
    return attributes


# --- RQ job functions for the jobs page's tests (workers import them by name) -------------------
def delivered(provider: str) -> dict[str, str]:
    return {"provider": provider, "state": "delivered"}


def refused(provider: str) -> None:
    raise ValueError(f"{provider} answered 503: provider said no")
