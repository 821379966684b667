"""Span budgets for tests: how many statements a block may run, and no N+1 inside it.

Zero setup: install the package and use the budgets; every SQLAlchemy engine of the test process
is watched, however and whenever it was created (an engine made in your app factory,
Flask-SQLAlchemy's, an ``AsyncEngine``), with no call to make::

    from latency_lab.telemetry.testing import assert_max_queries, assert_no_n_plus_one,
    assert_queries

    def test_book_listing(client):
        with assert_max_queries(2), assert_no_n_plus_one():
            client.get("/books")

or, for a whole test (the markers are registered by the ``latency_lab`` pytest plugin)::

    @pytest.mark.max_queries(3)
    @pytest.mark.no_n_plus_one(allow=["Book.author"])
    def test_book_listing(client): ...

A failing budget lists the statements, groups the repeated ones ("10x SELECT ... WHERE
authors.id = ?") and explains each N+1: the relationship (``Book.author``), the count against
the threshold, the total time, the line of your code that triggered the lazy loads
(``app.py:41 in books``) and the fix (``selectinload(Book.author)``). Accepted cases are allowed
by name: ``assert_no_n_plus_one(allow=["Book.author"])``, the marker's ``allow=``, or
``@pytest.mark.allow_n_plus_one("Book.author")`` for every budget of a test.

Never a silent pass: when a block ran no statement *and* nothing could have seen one (no
SQLAlchemy engine alive in this process has ever connected, and no database span was recorded:
the code under test runs in another process, or talks to its database without SQLAlchemy), the
budget fails and says so, instead of passing on nothing.

Where statements come from: SQLAlchemy statements from :mod:`latency_lab.telemetry.engine_watch`,
which listens on the ``Engine`` class (no tracing needed, so sampling cannot hide one); any other
database span (``db.statement`` / ``db.query.text``) finished on a watched tracer provider counts
too, for other drivers. The OpenTelemetry SQLAlchemy instrumentation's own spans are not counted
again. ``spans.instrument_engine(engine)`` still gives an engine spans for a custom tracer, but
budgets never need it.

``assert_cache_hit(layer)`` and ``assert_offloaded(task)`` check the lab's cache and queue
spans (:mod:`latency_lab.telemetry.vocabulary`). Every assertion uses the capture of the running
test: the ``spans`` fixture's, or, when the test did not ask for it, one started for the test on
first use; outside pytest pass ``spans=SpanCapture.start()``. Spans come from the global SDK tracer
provider (one is created for the session when there is none); another SDK provider's after
``spans.watch(provider)``.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from latency_lab.telemetry import engine_watch
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.budget_report import statement_report as _statement_report
from latency_lab.telemetry.nplusone import Finding, StatementRecord, detect_n_plus_one
from latency_lab.telemetry.orm import OrmRelationshipProcessor, instrument_engine

__all__ = [
    "SpanBudgetError",
    "SpanCapture",
    "SpanWindow",
    "allowing_n_plus_one",
    "assert_cache_hit",
    "assert_max_queries",
    "assert_no_n_plus_one",
    "assert_offloaded",
    "assert_queries",
    "current_capture",
]

# Its spans repeat statements the engine watcher has already seen.
_SQLALCHEMY_INSTRUMENTATION = "opentelemetry.instrumentation.sqlalchemy"

_P = ParamSpec("_P")
_active: list[SpanCapture] = []
_on_demand: list[SpanCapture] = []
_allowed_in_test: list[str] = []
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

    # --- budgets as methods ------------------------------------------------------------------
    def assert_queries(self, expected: int) -> Any:
        return assert_queries(expected, spans=self)

    def assert_max_queries(self, maximum: int) -> Any:
        return assert_max_queries(maximum, spans=self)

    def assert_no_n_plus_one(self, threshold: int = 5, *, allow: Iterable[str] = ()) -> Any:
        return assert_no_n_plus_one(threshold, allow=allow, spans=self)

    def assert_cache_hit(self, layer: v.CacheLayer | str) -> Any:
        return assert_cache_hit(layer, spans=self)

    def assert_offloaded(self, task: str) -> Any:
        return assert_offloaded(task, spans=self)


def current_capture() -> SpanCapture | None:
    """The capture of the running test (the ``spans`` fixture's or an on-demand one), if any."""
    return _active[-1] if _active else None


def stop_on_demand_captures() -> None:
    """End the captures that budgets started for a test without ``spans`` (plugin teardown)."""
    while _on_demand:
        _on_demand.pop().stop()


@contextmanager
def allowing_n_plus_one(relationships: Iterable[str]) -> Iterator[None]:
    """Accept these N+1s (``"Book.author"``) in every budget inside the block."""
    added = list(relationships)
    _allowed_in_test.extend(added)
    try:
        yield
    finally:
        for name in added:
            _allowed_in_test.remove(name)


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


def _traced_elsewhere(engine: Any) -> bool:
    """Whether the SQLAlchemy instrumentation already listens on this engine."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    registered = getattr(EngineTracer, "_remove_event_listener_params", [])
    return any(target() is engine for target, *_ in registered)


def _from_sqlalchemy_instrumentation(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name.startswith(_SQLALCHEMY_INSTRUMENTATION)


def _capture(spans: SpanCapture | None) -> SpanCapture:
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


# --- budgets ---------------------------------------------------------------------------------
class SpanBudgetError(AssertionError):
    """A span budget was exceeded; the message already lists the statements."""


class _Budget(AbstractContextManager[SpanWindow]):
    """Like ``contextlib.contextmanager``, but a failure's traceback ends at the user's ``with``.

    The budget is checked after the block only when the block succeeded; otherwise the block's
    own exception propagates unchanged.
    """

    def __init__(self, check: Generator[SpanWindow, None, None]) -> None:
        self._check = check

    def __enter__(self) -> SpanWindow:
        return next(self._check)

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        __tracebackhide__ = True
        if kind is not None:
            self._check.close()
            return
        for _ in self._check:
            raise RuntimeError("a span budget yields once")


def _budget(
    check: Callable[_P, Generator[SpanWindow, None, None]],
) -> Callable[_P, AbstractContextManager[SpanWindow]]:
    @functools.wraps(check)
    def budget(*args: _P.args, **kwargs: _P.kwargs) -> AbstractContextManager[SpanWindow]:
        return _Budget(check(*args, **kwargs))

    return budget


@_budget
def assert_queries(
    expected: int, *, spans: SpanCapture | None = None
) -> Generator[SpanWindow, None, None]:
    """Exactly ``expected`` database statements inside the block."""
    __tracebackhide__ = True  # pytest shows the user's `with`, not this function
    with _capture(spans).window() as window:
        yield window
    statements = _observed_statements(window, f"Expected {expected} database statements")
    if len(statements) != expected:
        heading = f"Expected {expected} database statements, {len(statements)} were executed"
        raise SpanBudgetError(_statement_report(heading, statements, inline_calls_of(window.spans)))


@_budget
def assert_max_queries(
    maximum: int, *, spans: SpanCapture | None = None
) -> Generator[SpanWindow, None, None]:
    """At most ``maximum`` database statements inside the block."""
    __tracebackhide__ = True  # pytest shows the user's `with`, not this function
    with _capture(spans).window() as window:
        yield window
    expected = f"Expected at most {maximum} database statements"
    statements = _observed_statements(window, expected)
    if len(statements) > maximum:
        heading = f"{expected}, {len(statements)} were executed"
        raise SpanBudgetError(_statement_report(heading, statements, inline_calls_of(window.spans)))


@_budget
def assert_no_n_plus_one(
    threshold: int = 5,
    *,
    allow: Iterable[str] = (),
    spans: SpanCapture | None = None,
    relationship_kinds: Mapping[str, bool] | None = None,
) -> Generator[SpanWindow, None, None]:
    """No statement shape, and no inline third-party provider, repeated ``threshold`` times.

    ``allow`` names accepted repeats: relationships (``"Book.author"``), statement shapes or
    providers; so does ``@pytest.mark.allow_n_plus_one(...)`` for the whole test.
    """
    __tracebackhide__ = True  # pytest shows the user's `with`, not this function
    with _capture(spans).window() as window:
        yield window
    statements = _observed_statements(window, "Expected no N+1")
    calls = inline_calls_of(window.spans)
    found = detect_n_plus_one(
        statements, threshold=threshold, calls=calls, relationship_kinds=relationship_kinds
    )
    accepted = {*allow, *_allowed_in_test}
    findings = [finding for finding in found if not _is_allowed(finding, accepted)]
    if findings:
        heading = f"N+1 detected: {len(findings)} repeated pattern(s) of {threshold} or more"
        allowed = [finding for finding in found if finding not in findings]
        raise SpanBudgetError(
            _statement_report(heading, statements, calls, threshold, findings, allowed)
        )


def _is_allowed(finding: Finding, accepted: set[str]) -> bool:
    return bool({finding.relationship, finding.shape} & accepted)


def _observed_statements(window: SpanWindow, expected: str) -> list[StatementRecord]:
    """The window's statements; a block where none *could* have been seen fails instead."""
    __tracebackhide__ = True  # pytest shows the user's `with`, not this function
    statements = window.statements()
    if statements or engine_watch.connected_engines() or _database_spans_seen:
        return statements
    raise SpanBudgetError(
        f"{expected}, but no database activity could be observed in this block: no SQLAlchemy "
        "engine in this process has opened a connection, and no database span was recorded, "
        "so a budget here would pass on nothing.\n"
        "Every SQLAlchemy engine of the test process is watched without setup (sync or async, "
        "however it was created). If the code under test runs in another process (a live "
        "server, a worker), put the budget in that process. If it reaches the database "
        "without SQLAlchemy, give that driver OpenTelemetry database spans (for example "
        "opentelemetry-instrumentation-psycopg or -sqlite3) on the global tracer provider, or "
        "pass its provider to spans.watch(provider)."
    )


@_budget
def assert_cache_hit(
    layer: v.CacheLayer | str, *, spans: SpanCapture | None = None
) -> Generator[SpanWindow, None, None]:
    """At least one lookup on ``layer`` (``edge``, ``redis``, ``app``) that hit in the block."""
    __tracebackhide__ = True  # pytest shows the user's `with`, not this function
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


@_budget
def assert_offloaded(
    task: str, *, spans: SpanCapture | None = None
) -> Generator[SpanWindow, None, None]:
    """``task`` enqueued as a job inside the block, and not also called inline.

    ``task`` matches any ``rq.enqueue`` span whose ``lab.job.func`` contains it; an inline
    third-party call counts against it when its provider's name and ``task`` contain each other
    (``"email"`` and ``"send_welcome_email"``).
    """
    __tracebackhide__ = True  # pytest shows the user's `with`, not this function
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
