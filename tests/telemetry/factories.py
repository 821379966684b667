"""Real SDK spans for the tests: the one span factory.

:class:`RecordingProvider` is an SDK provider named like a lab process that keeps its finished
spans in memory; :func:`request_trace` builds a request with the lab's accounting attributes.
The dashboard's lab-shaped traces (``tests.dashboard.factories``) are built on the same provider.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, set_span_in_context

from latency_lab.telemetry import vocabulary as v

MS = 1_000_000


@dataclass
class RecordingProvider:
    """An SDK provider named like a lab process, keeping finished spans in memory."""

    service: str = "latency-lab-service"
    role: str = "service"
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)

    def __post_init__(self) -> None:
        resource = Resource.create({"service.name": self.service, v.PROCESS_ROLE: self.role})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def tracer(self) -> Tracer:
        return self.provider.get_tracer("tests")

    def take(self) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans


@dataclass(frozen=True)
class RequestShape:
    route: str = "/api/leads"
    duration_ms: float = 100.0
    status: int = 200
    config: str = "eager_loading=off"
    statements: int = 3
    hits: Mapping[str, int] = field(default_factory=dict)
    misses: Mapping[str, int] = field(default_factory=dict)
    n_plus_one: str | None = None


def request_trace(tracer: Tracer, start_ns: int, shape: RequestShape) -> None:
    """One SERVER span with ``shape.statements`` database children, timed exactly."""
    end_ns = start_ns + int(shape.duration_ms * MS)
    server = tracer.start_span(
        f"GET {shape.route}",
        kind=SpanKind.SERVER,
        start_time=start_ns,
        attributes=_server_attributes(shape),
    )
    context = set_span_in_context(server)
    for index in range(shape.statements):
        child = tracer.start_span(
            "SELECT",
            context=context,
            kind=SpanKind.CLIENT,
            start_time=start_ns + (index + 1) * 1000,
        )
        child.set_attribute("db.statement", f"SELECT * FROM users WHERE users.id = {index}")
        child.end(end_time=start_ns + (index + 1) * 1000 + 500)
    if shape.status >= 500:
        server.set_status(Status(StatusCode.ERROR))
    server.end(end_time=end_ns)


def _server_attributes(shape: RequestShape) -> dict[str, str | int | float | bool]:
    attributes: dict[str, str | int | float | bool] = {
        "http.route": shape.route,
        "http.request.method": "GET",
        "url.path": shape.route,
        "http.response.status_code": shape.status,
        v.REQ_DB_STATEMENTS: shape.statements,
        v.REQ_DB_TIME_MS: shape.statements * 0.5,
        v.CONFIG_KEY: shape.config,
        v.TOGGLE_PREFIX + "eager_loading": "eager_loading=on" in shape.config,
        v.WORLD_PREFIX + "db_rtt_ms": 1.0,
    }
    for layer, count in shape.hits.items():
        attributes[v.REQ_CACHE_HITS_PREFIX + layer] = count
    for layer, count in shape.misses.items():
        attributes[v.REQ_CACHE_MISSES_PREFIX + layer] = count
    if shape.n_plus_one:
        attributes[v.REQ_N_PLUS_ONE] = shape.n_plus_one
    return attributes


def request_traces(
    recording: RecordingProvider, shapes: Sequence[RequestShape], *, start_ns: int | None = None
) -> list[ReadableSpan]:
    """Traces one millisecond apart, in order, ending a minute ago; returns their spans."""
    if start_ns is None:
        start_ns = time.time_ns() - 60_000 * MS - len(shapes) * MS
    for index, shape in enumerate(shapes):
        request_trace(recording.tracer, start_ns + index * MS, shape)
    return recording.take()
