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
    return _redacted(attributes, keep_profiles=keep_profiles)[0]


def _redacted(
    attributes: Mapping[str, Any] | None, *, keep_profiles: bool = True
) -> tuple[dict[str, Any], bool]:
    """The masked attributes, and whether masking changed anything."""
    out: dict[str, Any] = {}
    changed = False
    for key, value in dict(attributes or {}).items():  # one copy: SDK attributes iterate slowly
        if key == v.PROFILE:
            # Function names and file paths only: kept whole for the trace store, not sent to
            # an OTLP backend (a speedscope document is no span attribute for a backend).
            if keep_profiles:
                out[key] = value
            else:
                changed = True
            continue
        if key in v.DB_STATEMENT_KEYS and isinstance(value, str):
            masked = mask_statement(value)
        else:
            masked = _mask_value(value)
        changed = changed or (masked is not value and masked != value)
        out[key] = masked
    return out, changed


def _mask_value(value: Any) -> Any:
    """``value`` masked; the very same object when there was nothing to mask."""
    if isinstance(value, str):
        masked = mask_text(value)
        return value if masked == value else masked
    if isinstance(value, tuple | list):
        items = [mask_text(item) if isinstance(item, str) else item for item in value]
        return value if items == list(value) else type(value)(items)
    return value


def redact_span(span: ReadableSpan, *, keep_profiles: bool = True) -> ReadableSpan:
    """``span`` with its name, attributes, events and status message masked: a copy when
    anything changed, else the span itself (most spans carry no address and no SQL literal,
    and copying them would only cost the export thread time)."""
    status = span.status
    if status.description:
        masked = mask_text(status.description)
        if masked != status.description:
            status = type(status)(status.status_code, masked)
    name = mask_text(span.name)
    attributes, changed = _redacted(span.attributes, keep_profiles=keep_profiles)
    events = []
    for event in span.events:
        event_attributes, event_changed = _redacted(event.attributes)
        changed = changed or event_changed
        events.append(Event(event.name, event_attributes, event.timestamp))
    if not changed and name == span.name and status is span.status:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
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
