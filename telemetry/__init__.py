"""Latency Lab telemetry: OpenTelemetry wiring for one process, and the trace store behind it.

Usage, once per process, from its entry point (never at import time)::

    from latency_lab.telemetry import configure
    lab_telemetry = configure("latency-lab-service", role="service", store_url=url)
    FlaskInstrumentor().instrument_app(app, tracer_provider=lab_telemetry.tracer_provider)
    ...
    lab_telemetry.shutdown()

What ``configure`` builds:

* a ``TracerProvider`` whose resource names the process (``OTEL_SERVICE_NAME`` wins over the
  default name) and whose sampler follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``;
* the :class:`~latency_lab.telemetry.accounting.RequestLedger`, which tallies each request's
  statements, cache outcomes and third-party calls (``Server-Timing`` and the store's summary rows);
* the :class:`~latency_lab.telemetry.orm.OrmRelationshipProcessor`, naming the relationship behind
  lazy loads;
* export to the trace store through a bounded, counting batch processor (``OTEL_BSP_*``): a full
  queue drops spans and counts them, it never raises in a request;
* when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, a second export over
  OTLP/HTTP to Jaeger, Tempo or any collector;
* both exports go through :class:`~latency_lab.telemetry.redaction.RedactingSpanExporter`: email
  addresses masked, SQL statements without literal values.

With ``OTEL_SDK_DISABLED=true`` nothing is recorded: the provider is a no-op, so the lab's own
overhead can be measured against an uninstrumented run.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from latency_lab.telemetry import vocabulary
from latency_lab.telemetry.accounting import RequestLedger, RequestTally
from latency_lab.telemetry.orm import OrmRelationshipProcessor, track_relationship_loads
from latency_lab.telemetry.processors import CountingBatchSpanProcessor
from latency_lab.telemetry.redaction import RedactingSpanExporter

__all__ = [
    "ProcessTelemetry",
    "RequestLedger",
    "RequestTally",
    "configure",
    "instrument_redis",
    "vocabulary",
]


@dataclass
class ProcessTelemetry:
    """What ``configure`` built for this process."""

    service_name: str
    role: str
    tracer_provider: trace.TracerProvider
    ledger: RequestLedger
    store_processor: CountingBatchSpanProcessor | None = None
    extra_processors: list[SpanProcessor] = field(default_factory=list)
    enabled: bool = True

    @functools.cached_property
    def tracer(self) -> trace.Tracer:
        """The lab's own tracer (made once: ``get_tracer`` builds a new one on every call)."""
        return self.tracer_provider.get_tracer("latency-lab")

    def dropped_spans(self) -> int:
        return self.store_processor.dropped if self.store_processor else 0

    def exported_spans(self) -> int:
        return self.store_processor.exported if self.store_processor else 0

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        flush = getattr(self.tracer_provider, "force_flush", None)
        return bool(flush(timeout_millis)) if flush else True

    def shutdown(self) -> None:
        shutdown = getattr(self.tracer_provider, "shutdown", None)
        if shutdown:
            shutdown()


def instrument_redis(client: Any, tracer_provider: trace.TracerProvider) -> None:
    """One span per Redis command on this client (the request path's cache and queue traffic)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client, tracer_provider=tracer_provider)


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def configure(
    default_service_name: str,
    *,
    role: str,
    store_url: str | None = None,
    retention_max_age_s: float | None = 24 * 3600,
    retention_max_spans: int | None = 2_000_000,
    processors: list[SpanProcessor] | None = None,
    resource_attributes: dict[str, Any] | None = None,
    set_global: bool = False,
) -> ProcessTelemetry:
    """Build this process's tracer provider. Call it from the process's entry point only."""
    service_name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    ledger = RequestLedger()
    if sdk_disabled():
        return ProcessTelemetry(
            service_name, role, trace.NoOpTracerProvider(), ledger, enabled=False
        )

    resource = Resource.create(
        {
            "service.name": service_name,
            "service.namespace": "latency-lab",
            "host.name": socket.gethostname(),
            vocabulary.PROCESS_ROLE: role,
            **(resource_attributes or {}),
        }
    )
    provider = TracerProvider(resource=resource)
    track_relationship_loads()
    provider.add_span_processor(OrmRelationshipProcessor())
    provider.add_span_processor(ledger)
    store_processor = None
    if store_url:
        from latency_lab.telemetry.store import TraceStoreExporter

        exporter = TraceStoreExporter(
            store_url,
            retention_max_age_s=retention_max_age_s,
            retention_max_spans=retention_max_spans,
        )
        store_processor = CountingBatchSpanProcessor(RedactingSpanExporter(exporter))
        counting = store_processor
        # Each export also records this process's exported/dropped counts in the store.
        exporter.set_stats_source(lambda: (counting.exported, counting.dropped))
        provider.add_span_processor(store_processor)
    extra = list(processors or [])
    otlp = _otlp_processor()
    if otlp is not None:
        extra.append(otlp)
    for processor in extra:
        provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    return ProcessTelemetry(service_name, role, provider, ledger, store_processor, extra)


def _otlp_processor() -> SpanProcessor | None:
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The exporter reads the endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
    return BatchSpanProcessor(RedactingSpanExporter(OTLPSpanExporter(), keep_profiles=False))
