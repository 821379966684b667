"""Span budgets: how many statements a block may run, no N+1 inside it, a cache hit, a job.

Each budget is a context manager over a :class:`~latency_lab.telemetry.capture.SpanWindow` of the
running test's capture; a failure raises :class:`SpanBudgetError`, whose message lists the
statements (:mod:`latency_lab.telemetry.budget_report`). The user guide is
:mod:`latency_lab.telemetry.testing`, which exports these.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import ParamSpec

from latency_lab.telemetry import engine_watch
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.budget_report import statement_report as _statement_report
from latency_lab.telemetry.capture import (
    SpanCapture,
    SpanWindow,
    capture_for,
    database_spans_seen,
    inline_calls_of,
    named,
)
from latency_lab.telemetry.nplusone import Finding, StatementRecord, detect_n_plus_one

_P = ParamSpec("_P")
_allowed_in_test: list[str] = []


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
    with capture_for(spans).window() as window:
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
    with capture_for(spans).window() as window:
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
    with capture_for(spans).window() as window:
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
    if statements or engine_watch.connected_engines() or database_spans_seen():
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
    with capture_for(spans).window() as window:
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
    with capture_for(spans).window() as window:
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
