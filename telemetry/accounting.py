"""Per-request accounting: statements, cache outcomes, third-party calls and jobs, as they finish.

:class:`RequestLedger` is a span processor. The service opens a tally when a request starts
(keyed by its trace id), every span of that trace that ends in this process adds to it, and when
the response is built the tally becomes both the ``Server-Timing`` header and attributes on the
server span, which is what the trace store's summary row is made from. One accounting, two views:
the header and the store cannot disagree.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext, format_span_id, format_trace_id

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.nplusone import Finding, StatementRecord, detect_n_plus_one


@dataclass
class RequestTally:
    """What one request cost, by kind."""

    statements: list[StatementRecord] = field(default_factory=list)
    db_time_ms: float = 0.0
    ext_calls: int = 0
    ext_time_ms: float = 0.0
    ext_providers: list[str] = field(default_factory=list)
    jobs_enqueued: int = 0
    cache_hits: Counter[str] = field(default_factory=Counter)
    cache_misses: Counter[str] = field(default_factory=Counter)

    @property
    def statement_count(self) -> int:
        return len(self.statements)

    def add(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        duration_ms = _duration_ms(span)
        statement = v.db_statement(attributes)
        if statement is not None:
            relationship = attributes.get(v.ORM_RELATIONSHIP)
            self.statements.append(
                StatementRecord(
                    statement=statement,
                    duration_ms=duration_ms,
                    relationship=str(relationship) if relationship else None,
                )
            )
            self.db_time_ms += duration_ms
            return
        layer = attributes.get(v.CACHE_LAYER)
        if layer is not None:
            outcome = attributes.get(v.CACHE_OUTCOME)
            if outcome == v.CacheOutcome.HIT:
                self.cache_hits[str(layer)] += 1
            elif outcome == v.CacheOutcome.MISS:
                self.cache_misses[str(layer)] += 1
            return
        provider = attributes.get(v.THIRD_PARTY_PROVIDER)
        if provider is not None and attributes.get(v.THIRD_PARTY_MODE) == v.CallMode.INLINE:
            self.ext_calls += 1
            self.ext_time_ms += duration_ms
            self.ext_providers.append(str(provider))
            return
        if span.name == v.SPAN_ENQUEUE:
            self.jobs_enqueued += 1

    def findings(self, threshold: int = 5) -> list[Finding]:
        return detect_n_plus_one(self.statements, threshold=threshold, calls=self.ext_providers)

    def attributes(self, threshold: int = 5) -> dict[str, int | float | str]:
        """The tally as server-span attributes (what the trace store's summary row reads)."""
        out: dict[str, int | float | str] = {
            v.REQ_DB_STATEMENTS: self.statement_count,
            v.REQ_DB_TIME_MS: round(self.db_time_ms, 3),
            v.REQ_EXT_CALLS: self.ext_calls,
            v.REQ_EXT_TIME_MS: round(self.ext_time_ms, 3),
            v.REQ_JOBS_ENQUEUED: self.jobs_enqueued,
        }
        for layer in v.CacheLayer:
            out[v.REQ_CACHE_HITS_PREFIX + layer.value] = self.cache_hits[layer.value]
            out[v.REQ_CACHE_MISSES_PREFIX + layer.value] = self.cache_misses[layer.value]
        findings = self.findings(threshold)
        if findings:
            out[v.REQ_N_PLUS_ONE] = Finding.dumps(findings)
        return out

    def server_timing(self) -> str:
        """The ``Server-Timing`` header value (RFC-style metrics, W3C Server Timing)."""
        parts = [
            f'db;dur={self.db_time_ms:.1f};desc="{self.statement_count} statements"',
            f'ext;dur={self.ext_time_ms:.1f};desc="{self.ext_calls} calls"',
        ]
        for layer in (v.CacheLayer.REDIS, v.CacheLayer.APP):
            if self.cache_hits[layer.value]:
                parts.append(f'cache-{layer.value};desc="hit"')
            elif self.cache_misses[layer.value]:
                parts.append(f'cache-{layer.value};desc="miss"')
        if self.jobs_enqueued:
            parts.append(f'queue;desc="{self.jobs_enqueued} jobs"')
        return ", ".join(parts)


_STATEMENTS = re.compile(r'db;dur=([\d.]+);desc="(\d+) statements"')
_EXT = re.compile(r'ext;dur=([\d.]+);desc="(\d+) calls"')
_CACHE = re.compile(r'cache-(\w+);desc="(hit|miss)"')
_QUEUE = re.compile(r'queue;desc="(\d+) jobs"')


@dataclass(frozen=True)
class ServerTiming:
    """What a response's ``Server-Timing`` says it cost: :meth:`RequestTally.server_timing`, read
    back (by the edge, the load generator and the bench)."""

    statements: int | None = None
    db_ms: float | None = None
    ext_calls: int | None = None
    ext_ms: float | None = None
    jobs_enqueued: int = 0
    cache: dict[str, str] = field(default_factory=dict)

    def attributes(self) -> dict[str, int | float]:
        """As the ``lab.request.*`` attributes a server span carries."""
        out: dict[str, int | float] = {
            v.REQ_DB_STATEMENTS: self.statements or 0,
            v.REQ_DB_TIME_MS: self.db_ms or 0.0,
            v.REQ_EXT_CALLS: self.ext_calls or 0,
            v.REQ_EXT_TIME_MS: self.ext_ms or 0.0,
            v.REQ_JOBS_ENQUEUED: self.jobs_enqueued,
        }
        for layer, outcome in self.cache.items():
            out[v.REQ_CACHE_HITS_PREFIX + layer] = int(outcome == v.CacheOutcome.HIT)
            out[v.REQ_CACHE_MISSES_PREFIX + layer] = int(outcome == v.CacheOutcome.MISS)
        return out


def parse_server_timing(header: str | None) -> ServerTiming:
    header = header or ""
    statements = _STATEMENTS.search(header)
    ext = _EXT.search(header)
    queue = _QUEUE.search(header)
    return ServerTiming(
        statements=int(statements.group(2)) if statements else None,
        db_ms=float(statements.group(1)) if statements else None,
        ext_calls=int(ext.group(2)) if ext else None,
        ext_ms=float(ext.group(1)) if ext else None,
        jobs_enqueued=int(queue.group(1)) if queue else 0,
        cache=dict(_CACHE.findall(header)),
    )


def traceresponse_header(context: SpanContext) -> str | None:
    """``traceresponse`` (W3C Trace Context level 2) naming this span's trace."""
    if not context.is_valid:
        return None
    return (
        f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-"
        f"{int(context.trace_flags):02x}"
    )


def trace_id_of(traceresponse: str | None) -> str | None:
    """The trace id a ``traceresponse`` header names (lowercase hex), or None if it names none."""
    parts = (traceresponse or "").strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32:
        return None
    trace_id = parts[1].lower()
    return trace_id if all(c in "0123456789abcdef" for c in trace_id) else None


class RequestLedger(SpanProcessor):
    """Collects finished spans into the tally of the request (trace) they belong to."""

    def __init__(self) -> None:
        self._open: dict[int, RequestTally] = {}
        self._lock = threading.Lock()

    def open(self, trace_id: int) -> RequestTally:
        tally = RequestTally()
        with self._lock:
            self._open[trace_id] = tally
        return tally

    def close(self, trace_id: int) -> RequestTally | None:
        with self._lock:
            return self._open.pop(trace_id, None)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        tally = self._open.get(span.context.trace_id)
        if tally is not None:
            tally.add(span)

    def shutdown(self) -> None:
        with self._lock:
            self._open.clear()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _duration_ms(span: ReadableSpan) -> float:
    if span.start_time is None or span.end_time is None:
        return 0.0
    return (span.end_time - span.start_time) / 1e6
