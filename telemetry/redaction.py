"""Keep personal data and SQL literals out of exported spans.

Traces are for looking at latency, and they travel further than the database: into the trace
store, which the dashboard shows to anyone on the machine, and over OTLP to any backend. So
before a span leaves its process, :class:`RedactingSpanExporter` rewrites it:

* every email address in an attribute value, the span name or an event becomes ``[email]``
  (a query string such as ``?email=ana@example.com`` lands in ``http.target``, an exception
  message may quote a row);
* SQL statements (``db.statement`` / ``db.query.text``) keep their shape but no literal value:
  quoted strings and numbers become ``?``. The lab's statements are parameterized already; this
  makes sure a literal typed into one never reaches the store.

The rewrite happens on the export thread, never on the request path. In-process span
processors (the request ledger, tests' in-memory exporters) see the spans as recorded.

Usage::

    processor = CountingBatchSpanProcessor(RedactingSpanExporter(TraceStoreExporter(url)))
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from latency_lab.telemetry import vocabulary as v

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
EMAIL_MASK = "[email]"
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_SQL_NUMBER = re.compile(r"(?<![\w.$:%])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def mask_text(text: str) -> str:
    """``ana@example.com`` -> ``[email]``; anything else unchanged."""
    if "@" not in text:  # most values: no address possible, skip the regular expression
        return text
    return EMAIL.sub(EMAIL_MASK, text)


def mask_statement(statement: str) -> str:
    """A statement without literal values: ``WHERE email = 'a@b.io' AND id = 7`` ->
    ``WHERE email = ? AND id = ?``. Placeholders and identifiers (``lead_tags_1``) stay."""
    return mask_text(_SQL_NUMBER.sub("?", _SQL_STRING.sub("?", statement)))


def redact_attributes(
    attributes: Mapping[str, Any] | None, *, keep_profiles: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key == v.PROFILE:
            # Function names and file paths only: kept whole for the trace store, not sent to
            # an OTLP backend (a speedscope document is no span attribute for a backend).
            if keep_profiles:
                out[key] = value
        elif key in v.DB_STATEMENT_KEYS and isinstance(value, str):
            out[key] = mask_statement(value)
        else:
            out[key] = _mask_value(value)
    return out


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, tuple | list):
        return type(value)(mask_text(item) if isinstance(item, str) else item for item in value)
    return value


def redact_span(span: ReadableSpan, *, keep_profiles: bool = True) -> ReadableSpan:
    """A copy of ``span`` with its name, attributes, events and status message masked."""
    status = span.status
    if status.description:
        status = type(status)(status.status_code, mask_text(status.description))
    return ReadableSpan(
        name=mask_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=redact_attributes(span.attributes, keep_profiles=keep_profiles),
        events=[
            Event(event.name, redact_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter: what it receives has been through :func:`redact_span`."""

    def __init__(self, exporter: SpanExporter, *, keep_profiles: bool = True) -> None:
        self.exporter = exporter
        self.keep_profiles = keep_profiles

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        keep = self.keep_profiles
        return self.exporter.export([redact_span(span, keep_profiles=keep) for span in spans])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.exporter.shutdown()
