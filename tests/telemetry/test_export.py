"""Export paths: OTLP/HTTP to any collector; a full queue drops and counts, never raises."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from latency_lab import telemetry
from latency_lab.telemetry.processors import BatchSettings, CountingBatchSpanProcessor
from latency_lab.telemetry.store import TraceStore


class Collector(HTTPServer):
    """A minimal OTLP/HTTP trace receiver on a free loopback port."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CollectorHandler)
        self.requests: list[tuple[str, ExportTraceServiceRequest]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def span_names(self) -> list[str]:
        return [
            span.name
            for _, request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


class CollectorHandler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.requests.append((self.path, ExportTraceServiceRequest.FromString(body)))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def otel_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_spans_reach_an_otlp_collector(
    collector: Collector, otel_environment: pytest.MonkeyPatch, sqlite_store_url: str
) -> None:
    otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    lab = telemetry.configure("latency-lab-test", role="test", store_url=sqlite_store_url)
    with (
        lab.tracer.start_as_current_span("GET /api/leads"),
        lab.tracer.start_as_current_span("cache.lookup redis"),
    ):
        pass
    lab.shutdown()

    assert sorted(collector.span_names()) == ["GET /api/leads", "cache.lookup redis"]
    path, request = collector.requests[0]
    assert path == "/v1/traces"
    resource = {
        attribute.key: attribute.value.string_value
        for attribute in request.resource_spans[0].resource.attributes
    }
    assert (resource["service.name"], resource["lab.process.role"]) == ("latency-lab-test", "test")
    # The same spans also landed in the trace store, with nothing dropped.
    assert TraceStore(sqlite_store_url).counts()["spans"] == 2
    assert (lab.exported_spans(), lab.dropped_spans()) == (2, 0)


def test_no_otlp_export_without_an_endpoint(otel_environment: pytest.MonkeyPatch) -> None:
    otel_environment.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    lab = telemetry.configure("latency-lab-test", role="test")
    assert lab.extra_processors == []
    lab.shutdown()


class SlowExporter(SpanExporter):
    """A collector that cannot keep up."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(self.delay_s)
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def test_full_queue_drops_and_counts_without_raising() -> None:
    exporter = SlowExporter(delay_s=0.02)
    settings = BatchSettings(max_queue_size=10, schedule_delay_ms=5, max_export_batch_size=5)
    processor = CountingBatchSpanProcessor(exporter, settings)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests")
    total = 300
    for number in range(total):  # ends spans far faster than 250 spans/s can leave
        with tracer.start_as_current_span(f"request {number}"):
            pass
    provider.shutdown()

    assert processor.dropped > 0
    assert processor.exported + processor.dropped == total
    assert exporter.received == processor.exported
