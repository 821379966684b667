"""The span capture behind the budgets: the running test's finished spans and statements.

A :class:`SpanCapture` collects, in memory, the spans finished on the watched SDK tracer providers
and the statements the engine watcher (:mod:`latency_lab.telemetry.engine_watch`) saw; a
:class:`SpanWindow` is the part of it that one ``with`` block saw. One router per provider hands
spans to whichever capture is active (the SDK cannot remove a span processor). The budgets
(:mod:`latency_lab.telemetry.budgets`) read captures; users import both from
:mod:`latency_lab.telemetry.testing`.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from latency_lab.telemetry import engine_watch
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.budget_report import statement_report as _statement_report
from latency_lab.telemetry.nplusone import StatementRecord
from latency_lab.telemetry.orm import OrmRelationshipProcessor, instrument_engine, is_instrumented

# Its spans repeat statements the engine watcher has already seen.
_SQLALCHEMY_INSTRUMENTATION = "opentelemetry.instrumentation.sqlalchemy"

_active: list[SpanCapture] = []
_on_demand: list[SpanCapture] = []
_routed: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
_traced_engines: weakref.WeakSet[Any] = weakref.WeakSet()
_session_provider: TracerProvider | None = None
_database_spans_seen = False


# --- spans as a test sees them ---------------------------------------------------------------
def statements_of(spans: Sequence[ReadableSpan]) -> list[StatementRecord]:
    """The database statements among ``spans`` not already seen by the engine watcher."""
    records = []
    for span in spans:
        attributes = span.attributes or {}
        statement = v.db_statement(attributes)
        if statement is None or _from_sqlalchemy_instrumentation(span):
            continue
        relationship = attributes.get(v.ORM_RELATIONSHIP)
        records.append(
            StatementRecord(
                statement=statement,
                duration_ms=_duration_ms(span),
                relationship=str(relationship) if relationship else None,
                started_ns=span.start_time or 0,
            )
        )
    return records


def inline_calls_of(spans: Sequence[ReadableSpan]) -> list[str]:
    """Providers of the third-party calls made inline (on the request path) among ``spans``."""
    return [
        str((span.attributes or {})[v.THIRD_PARTY_PROVIDER])
        for span in spans
        if _is_inline_call(span)
    ]


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    """Spans called ``name`` or ``name <qualifier>`` (``cache.lookup`` finds the redis one)."""
    return [span for span in spans if span.name == name or span.name.startswith(name + " ")]


def _in_order(*sources: Iterable[StatementRecord]) -> list[StatementRecord]:
    return sorted((record for source in sources for record in source), key=_started)


def _started(record: StatementRecord) -> int:
    return record.started_ns


class SpanWindow:
    """The spans finished, and the statements run, inside one ``with`` block."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.watched: list[StatementRecord] = []

    def statements(self) -> list[StatementRecord]:
        return _in_order(self.watched, statements_of(self.spans))

    def by_name(self, name: str) -> list[ReadableSpan]:
        return named(self.spans, name)


# --- the capture ---------------------------------------------------------------------------
class SpanCapture:
    """Finished spans and SQLAlchemy statements of the running test, in memory."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.tracer_provider = tracer_provider
        self._exporter = InMemorySpanExporter()
        self._processor = SimpleSpanProcessor(self._exporter)
        self._watched: list[StatementRecord] = []
        self._windows: list[SpanWindow] = []
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None

    @classmethod
    def start(cls, *, claim_global: bool = True) -> SpanCapture:
        """Watch every engine and the global SDK provider (or the session's own); become active.

        With no global SDK provider, the session's own becomes the global one, unless
        ``claim_global`` is false (a capture the test did not ask for leaves it to the app).
        """
        capture = cls(_capture_provider(claim_global))
        capture._unsubscribe = engine_watch.subscribe(capture.receive_statement)
        _active.append(capture)
        return capture

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self in _active:
            _active.remove(self)

    def __enter__(self) -> SpanCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("latency-lab.testing")

    # --- wiring --------------------------------------------------------------------------
    def watch(self, provider: trace.TracerProvider) -> None:
        """Also capture the spans of another SDK provider (an app that keeps its own)."""
        if not isinstance(provider, TracerProvider):
            raise TypeError(f"can only watch an SDK TracerProvider, not {type(provider).__name__}")
        _route(provider)

    def instrument_engine(self, engine: Any) -> Any:
        """Give an engine OpenTelemetry spans in this capture (budgets do not need it).

        For tests that read the spans themselves (``spans.finished()``). Per engine
        (:func:`latency_lab.telemetry.orm.instrument_engine`): the instrumentor's ``instrument()``
        is a process-wide singleton that also patches ``create_engine``, leaking between tests.
        """
        if engine not in _traced_engines and not is_instrumented(engine):
            instrument_engine(engine, self.tracer_provider)
            _traced_engines.add(engine)
        return engine

    def instrument_flask(self, app: Any) -> Any:
        """Give a Flask app server spans (no-op if the app is already instrumented)."""
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        if not getattr(app, "_is_instrumented_by_opentelemetry", False):
            FlaskInstrumentor.instrument_app(app, tracer_provider=self.tracer_provider)
        return app

    # --- reading ---------------------------------------------------------------------------
    def finished(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    def statements(self) -> list[StatementRecord]:
        with self._lock:
            watched = list(self._watched)
        return _in_order(watched, statements_of(self.finished()))

    def by_name(self, name: str) -> list[ReadableSpan]:
        return named(self.finished(), name)

    def clear(self) -> None:
        self._exporter.clear()
        with self._lock:
            self._watched.clear()

    def report(self, threshold: int = 5) -> str:
        """The statements captured so far, repeated ones grouped, and N+1 findings."""
        statements = self.statements()
        heading = f"{len(statements)} database statements"
        return _statement_report(heading, statements, inline_calls_of(self.finished()), threshold)

    @contextmanager
    def window(self) -> Iterator[SpanWindow]:
        """Collect the spans and statements of the block (unaffected by :meth:`clear`)."""
        window = SpanWindow()
        with self._lock:
            self._windows.append(window)
        try:
            yield window
        finally:
            with self._lock:
                self._windows.remove(window)

    def receive(self, span: ReadableSpan) -> None:
        global _database_spans_seen
        self._processor.on_end(span)
        if v.db_statement(span.attributes or {}) is not None:
            _database_spans_seen = True
        with self._lock:
            for window in self._windows:
                window.spans.append(span)

    def receive_statement(self, record: StatementRecord) -> None:
        with self._lock:
            self._watched.append(record)
            for window in self._windows:
                window.watched.append(record)

    # --- budgets as methods (the budgets module imports this one: imported on use) ---------
    def assert_queries(self, expected: int) -> Any:
        from latency_lab.telemetry.budgets import assert_queries

        return assert_queries(expected, spans=self)

    def assert_max_queries(self, maximum: int) -> Any:
        from latency_lab.telemetry.budgets import assert_max_queries

        return assert_max_queries(maximum, spans=self)

    def assert_no_n_plus_one(self, threshold: int = 5, *, allow: Iterable[str] = ()) -> Any:
        from latency_lab.telemetry.budgets import assert_no_n_plus_one

        return assert_no_n_plus_one(threshold, allow=allow, spans=self)

    def assert_cache_hit(self, layer: v.CacheLayer | str) -> Any:
        from latency_lab.telemetry.budgets import assert_cache_hit

        return assert_cache_hit(layer, spans=self)

    def assert_offloaded(self, task: str) -> Any:
        from latency_lab.telemetry.budgets import assert_offloaded

        return assert_offloaded(task, spans=self)


def current_capture() -> SpanCapture | None:
    """The capture of the running test (the ``spans`` fixture's or an on-demand one), if any."""
    return _active[-1] if _active else None


def stop_on_demand_captures() -> None:
    """End the captures that budgets started for a test without ``spans`` (plugin teardown)."""
    while _on_demand:
        _on_demand.pop().stop()


class _CaptureRouter(SpanProcessor):
    """Sits on a provider for the whole session; hands finished spans to the active capture.

    The SDK cannot remove a span processor, so tests do not add and remove their own: one router
    per provider forwards to whichever capture is active, and drops spans when none is.
    """

    def __init__(self) -> None:
        self._orm = OrmRelationshipProcessor()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if _active:
            self._orm.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        capture = current_capture()
        if capture is not None:
            capture.receive(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _capture_provider(claim_global: bool) -> TracerProvider:
    global _session_provider
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _route(current)
        return current
    if _session_provider is None:
        _session_provider = TracerProvider(resource=Resource.create({"service.name": "pytest"}))
        _route(_session_provider)
    if claim_global and isinstance(current, trace.ProxyTracerProvider):  # nobody set one
        trace.set_tracer_provider(_session_provider)
    return _session_provider


def _route(provider: TracerProvider) -> None:
    if provider not in _routed:
        provider.add_span_processor(_CaptureRouter())
        _routed.add(provider)


def _from_sqlalchemy_instrumentation(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name.startswith(_SQLALCHEMY_INSTRUMENTATION)


def capture_for(spans: SpanCapture | None) -> SpanCapture:
    """``spans``, else the running test's capture, else one started for this pytest test."""
    capture = spans or current_capture()
    if capture is not None:
        return capture
    if os.environ.get("PYTEST_CURRENT_TEST"):  # inside a pytest test: start one for it
        capture = SpanCapture.start(claim_global=False)
        _on_demand.append(capture)
        return capture
    raise RuntimeError(
        "No span capture is active: outside pytest, pass spans=SpanCapture.start() "
        "(and stop it afterwards), or run the budget inside a pytest test."
    )


def database_spans_seen() -> bool:
    """Whether any capture has received a database span (another driver's statements)."""
    return _database_spans_seen


def _is_inline_call(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return (
        v.THIRD_PARTY_PROVIDER in attributes
        and attributes.get(v.THIRD_PARTY_MODE) == v.CallMode.INLINE.value
    )


def _duration_ms(span: ReadableSpan) -> float:
    if span.start_time is None or span.end_time is None:
        return 0.0
    return (span.end_time - span.start_time) / 1e6
