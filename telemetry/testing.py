"""Span budgets for tests: how many statements a block may run, and no N+1 inside it.

The ``latency_lab`` pytest plugin gives every test a ``spans`` fixture, a :class:`SpanCapture`
that records the spans finished while the test runs. The assertions below are context managers
that look only at the spans finished *inside* their block::

    from telemetry.testing import assert_max_queries, assert_no_n_plus_one, assert_queries

    def test_listing_is_eager(spans, app, client):
        spans.instrument_engine(app.extensions["db"].engine)
        with assert_queries(2):
            client.get("/authors")
        with assert_no_n_plus_one():
            client.get("/authors")

Statements are counted by their ``db.statement`` / ``db.query.text`` attribute, not by span:
the SQLAlchemy instrumentation also emits a ``connect`` span, which is no statement. When a
budget fails, the message lists the statements, groups the repeated ones ("10x SELECT ...
WHERE ? = books.author_id") and names each N+1 with its fix (``selectinload(Author.books)``).

``assert_cache_hit(layer)`` and ``assert_offloaded(task)`` check the lab's cache and queue
spans (:mod:`telemetry.vocabulary`). Every assertion uses the capture of the running test, or
the one passed as ``spans=``; :class:`SpanCapture` has the same context managers as methods.

Where the spans come from: if the global tracer provider is an SDK ``TracerProvider``, the
capture listens to it; otherwise one SDK provider is created for the test session and set as
the global provider. Spans of any other SDK provider (an app that keeps its own) are captured
after ``spans.watch(provider)``. Engines and Flask apps not traced yet are instrumented with
``spans.instrument_engine(engine)`` and ``spans.instrument_flask(app)``.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from telemetry import vocabulary as v
from telemetry.nplusone import (
    Finding,
    StatementRecord,
    detect_n_plus_one,
    normalize_statement,
)
from telemetry.orm import OrmRelationshipProcessor, instrument_engine, track_relationship_loads

__all__ = [
    "SpanBudgetError",
    "SpanCapture",
    "SpanWindow",
    "assert_cache_hit",
    "assert_max_queries",
    "assert_no_n_plus_one",
    "assert_offloaded",
    "assert_queries",
    "current_capture",
]

_MAX_LISTED = 40
_MAX_STATEMENT_CHARS = 180
_SELECT_LIST = re.compile(r"^(SELECT (?:DISTINCT )?)([^,]+?)(?: AS \w+)?, .*? FROM ", re.IGNORECASE)

_active: list[SpanCapture] = []
_routed: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
_traced_engines: weakref.WeakSet[Any] = weakref.WeakSet()
_session_provider: TracerProvider | None = None


# --- spans as a test sees them ---------------------------------------------------------------
def statements_of(spans: Sequence[ReadableSpan]) -> list[StatementRecord]:
    """The database statements among ``spans``, with the relationship that caused each."""
    records = []
    for span in spans:
        attributes = span.attributes or {}
        statement = v.db_statement(attributes)
        if statement is None:
            continue
        relationship = attributes.get(v.ORM_RELATIONSHIP)
        records.append(
            StatementRecord(
                statement=statement,
                duration_ms=_duration_ms(span),
                relationship=str(relationship) if relationship else None,
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


class SpanWindow:
    """The spans finished inside one ``with`` block."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def statements(self) -> list[StatementRecord]:
        return statements_of(self.spans)

    def by_name(self, name: str) -> list[ReadableSpan]:
        return named(self.spans, name)


# --- the capture ---------------------------------------------------------------------------
class SpanCapture:
    """Finished spans of the running test, in memory."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.tracer_provider = tracer_provider
        self._exporter = InMemorySpanExporter()
        self._processor = SimpleSpanProcessor(self._exporter)
        self._windows: list[SpanWindow] = []
        self._lock = threading.Lock()

    @classmethod
    def start(cls) -> SpanCapture:
        """Listen to the global SDK provider (or the session's own); become the active capture."""
        track_relationship_loads()
        capture = cls(_capture_provider())
        _active.append(capture)
        return capture

    def stop(self) -> None:
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
        """Trace a SQLAlchemy engine's statements into this capture (no-op if already traced).

        Per engine (:func:`telemetry.orm.instrument_engine`): the instrumentor's ``instrument()``
        is a process-wide singleton that also patches ``create_engine``, leaking between tests.
        """
        if engine not in _traced_engines and not _traced_elsewhere(engine):
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
        return statements_of(self.finished())

    def by_name(self, name: str) -> list[ReadableSpan]:
        return named(self.finished(), name)

    def clear(self) -> None:
        self._exporter.clear()

    def report(self, threshold: int = 5) -> str:
        """The statements captured so far, repeated ones grouped, and N+1 findings."""
        spans = self.finished()
        statements = statements_of(spans)
        heading = f"{len(statements)} database statements in {len(spans)} spans"
        return _statement_report(heading, statements, inline_calls_of(spans), threshold)

    @contextmanager
    def window(self) -> Iterator[SpanWindow]:
        """Collect the spans that finish inside the block (unaffected by :meth:`clear`)."""
        window = SpanWindow()
        with self._lock:
            self._windows.append(window)
        try:
            yield window
        finally:
            with self._lock:
                self._windows.remove(window)

    def receive(self, span: ReadableSpan) -> None:
        self._processor.on_end(span)
        with self._lock:
            for window in self._windows:
                window.spans.append(span)

    # --- budgets as methods ------------------------------------------------------------------
    def assert_queries(self, expected: int) -> Any:
        return assert_queries(expected, spans=self)

    def assert_max_queries(self, maximum: int) -> Any:
        return assert_max_queries(maximum, spans=self)

    def assert_no_n_plus_one(self, threshold: int = 5) -> Any:
        return assert_no_n_plus_one(threshold, spans=self)

    def assert_cache_hit(self, layer: v.CacheLayer | str) -> Any:
        return assert_cache_hit(layer, spans=self)

    def assert_offloaded(self, task: str) -> Any:
        return assert_offloaded(task, spans=self)


def current_capture() -> SpanCapture | None:
    """The capture of the running test (set by the ``spans`` fixture), if any."""
    return _active[-1] if _active else None


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


def _capture_provider() -> TracerProvider:
    global _session_provider
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _route(current)
        return current
    if _session_provider is None:
        _session_provider = TracerProvider(resource=Resource.create({"service.name": "pytest"}))
        _route(_session_provider)
        if isinstance(current, trace.ProxyTracerProvider):  # nobody set one: ours is global
            trace.set_tracer_provider(_session_provider)
    return _session_provider


def _route(provider: TracerProvider) -> None:
    if provider not in _routed:
        provider.add_span_processor(_CaptureRouter())
        _routed.add(provider)


def _traced_elsewhere(engine: Any) -> bool:
    """Whether the SQLAlchemy instrumentation already listens on this engine."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    registered = getattr(EngineTracer, "_remove_event_listener_params", [])
    return any(target() is engine for target, *_ in registered)


def _capture(spans: SpanCapture | None) -> SpanCapture:
    capture = spans or current_capture()
    if capture is None:
        raise RuntimeError(
            "No span capture is active: request the `spans` fixture (latency_lab pytest plugin) "
            "or pass spans=SpanCapture.start()."
        )
    return capture


# --- budgets ---------------------------------------------------------------------------------
class SpanBudgetError(AssertionError):
    """A span budget was exceeded; the message already lists the statements."""


@contextmanager
def assert_queries(expected: int, *, spans: SpanCapture | None = None) -> Iterator[SpanWindow]:
    """Exactly ``expected`` database statements inside the block."""
    with _capture(spans).window() as window:
        yield window
    statements = window.statements()
    if len(statements) != expected:
        heading = f"Expected {expected} database statements, {len(statements)} were executed"
        raise SpanBudgetError(_statement_report(heading, statements, inline_calls_of(window.spans)))


@contextmanager
def assert_max_queries(maximum: int, *, spans: SpanCapture | None = None) -> Iterator[SpanWindow]:
    """At most ``maximum`` database statements inside the block."""
    with _capture(spans).window() as window:
        yield window
    statements = window.statements()
    if len(statements) > maximum:
        heading = f"Expected at most {maximum} database statements, {len(statements)} were executed"
        raise SpanBudgetError(_statement_report(heading, statements, inline_calls_of(window.spans)))


@contextmanager
def assert_no_n_plus_one(
    threshold: int = 5,
    *,
    spans: SpanCapture | None = None,
    relationship_kinds: Mapping[str, bool] | None = None,
) -> Iterator[SpanWindow]:
    """No statement shape, and no inline third-party provider, repeated ``threshold`` times."""
    with _capture(spans).window() as window:
        yield window
    statements = window.statements()
    calls = inline_calls_of(window.spans)
    findings = detect_n_plus_one(
        statements, threshold=threshold, calls=calls, relationship_kinds=relationship_kinds
    )
    if findings:
        heading = f"N+1 detected: {len(findings)} repeated pattern(s) of {threshold} or more"
        raise SpanBudgetError(_statement_report(heading, statements, calls, threshold, findings))


@contextmanager
def assert_cache_hit(
    layer: v.CacheLayer | str, *, spans: SpanCapture | None = None
) -> Iterator[SpanWindow]:
    """At least one lookup on ``layer`` (``edge``, ``redis``, ``app``) that hit in the block."""
    wanted = v.CacheLayer(layer).value
    with _capture(spans).window() as window:
        yield window
    outcomes = Counter(
        (str(attributes[v.CACHE_LAYER]), str(attributes.get(v.CACHE_OUTCOME, "unknown")))
        for attributes in (span.attributes or {} for span in window.spans)
        if v.CACHE_LAYER in attributes
    )
    if outcomes[(wanted, v.CacheOutcome.HIT.value)]:
        return
    seen = ", ".join(
        f"{layer_} {outcome} x{count}" for (layer_, outcome), count in outcomes.items()
    )
    raise SpanBudgetError(
        f"Expected a cache hit on the {wanted!r} layer inside the block; "
        + (f"lookups seen: {seen}" if seen else f"no cache lookups ({v.CACHE_LAYER}) were recorded")
    )


@contextmanager
def assert_offloaded(task: str, *, spans: SpanCapture | None = None) -> Iterator[SpanWindow]:
    """``task`` enqueued as a job inside the block, and not also called inline.

    ``task`` matches any ``rq.enqueue`` span whose ``lab.job.func`` contains it; an inline
    third-party call counts against it when its provider's name and ``task`` contain each other
    (``"email"`` and ``"send_welcome_email"``).
    """
    with _capture(spans).window() as window:
        yield window
    enqueued = [
        str((s.attributes or {}).get(v.JOB_FUNC, "")) for s in named(window.spans, v.SPAN_ENQUEUE)
    ]
    inline = [
        provider
        for provider in inline_calls_of(window.spans)
        if provider.lower() in task.lower() or task.lower() in provider.lower()
    ]
    problems = []
    if not any(task in func for func in enqueued):
        listed = ", ".join(enqueued) if enqueued else "no jobs at all"
        problems.append(
            f"no {v.SPAN_ENQUEUE} span with {v.JOB_FUNC} containing it (enqueued: {listed})"
        )
    if inline:
        problems.append(f"it ran inline: {len(inline)}x {v.SPAN_THIRD_PARTY} {inline[0]}")
    if problems:
        raise SpanBudgetError(f"Expected {task!r} to be offloaded to a job; " + "; ".join(problems))


# --- messages --------------------------------------------------------------------------------
def _statement_report(
    heading: str,
    statements: Sequence[StatementRecord],
    calls: Sequence[str] = (),
    threshold: int = 5,
    findings: Sequence[Finding] | None = None,
) -> str:
    """Like Django Debug Toolbar: every statement, then the similar ones grouped, then N+1s."""
    lines = [f"{heading}:"]
    for number, record in enumerate(statements[:_MAX_LISTED], start=1):
        lines.append(f"  {number:>3}. {_short(record.statement)}{_because(record)}")
    if len(statements) > _MAX_LISTED:
        lines.append(f"  ... and {len(statements) - _MAX_LISTED} more")
    repeated = Counter(normalize_statement(record.statement) for record in statements)
    similar = [(shape, count) for shape, count in repeated.most_common() if count > 1]
    if similar:
        lines.append("Repeated statements (same shape, different parameters):")
        lines.extend(f"  {count}x {_short(shape)}" for shape, count in similar)
    if findings is None:
        findings = detect_n_plus_one(statements, threshold=threshold, calls=calls)
    if findings:
        lines.append(f"N+1 findings (threshold {threshold}):")
        lines.extend(f"  - {finding.describe()}" for finding in findings)
    return "\n".join(lines)


def _short(statement: str) -> str:
    """One line; a long select list keeps its first column, so the ``WHERE`` stays readable."""
    flat = " ".join(statement.split())
    if len(flat) > _MAX_STATEMENT_CHARS:
        flat = _SELECT_LIST.sub(lambda match: f"{match.group(1)}{match.group(2)}, ... FROM ", flat)
    if len(flat) <= _MAX_STATEMENT_CHARS:
        return flat
    return flat[: _MAX_STATEMENT_CHARS - 3] + "..."


def _because(record: StatementRecord) -> str:
    return f"  [{record.relationship}]" if record.relationship else ""


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
