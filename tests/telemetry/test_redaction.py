"""Redaction on the export thread: masked where it must be, untouched (not even copied) where
there is nothing to mask."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.redaction import EMAIL_MASK, redact_span


def finished(name: str, attributes: dict[str, Any], status: str | None = None) -> ReadableSpan:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("test").start_as_current_span(name, attributes=attributes) as span:
        span.add_event("lookup", {"key": "leads:limit=100"})
        if status:
            span.set_status(Status(StatusCode.ERROR, status))
    (span_,) = memory.get_finished_spans()
    return span_


def test_a_span_with_nothing_to_mask_is_exported_as_is() -> None:
    span = finished("cache.lookup redis", {v.CACHE_LAYER: "redis", v.CACHE_OUTCOME: "hit"})

    assert redact_span(span) is span


def test_an_address_anywhere_is_masked_in_a_copy() -> None:
    span = finished(
        "GET /api/leads",
        {"http.target": "/api/leads?email=ana@example.com", v.CACHE_OUTCOME: "hit"},
        status="no lead for bo@example.org",
    )

    redacted = redact_span(span)

    assert redacted is not span
    assert redacted.attributes["http.target"] == f"/api/leads?email={EMAIL_MASK}"
    assert redacted.attributes[v.CACHE_OUTCOME] == "hit"
    assert redacted.status.description == f"no lead for {EMAIL_MASK}"
    assert span.attributes["http.target"].endswith("ana@example.com")  # the original is kept


def test_a_statement_loses_its_literals_and_a_profile_stays_out_of_an_otlp_export() -> None:
    span = finished(
        "SELECT",
        {"db.statement": "SELECT * FROM leads WHERE id = 7", v.PROFILE: "{}"},
    )

    to_store = redact_span(span)
    to_otlp = redact_span(span, keep_profiles=False)

    assert to_store.attributes["db.statement"] == "SELECT * FROM leads WHERE id = ?"
    assert to_store.attributes[v.PROFILE] == "{}"
    assert v.PROFILE not in (to_otlp.attributes or {})
