"""The ``latency_lab`` pytest plugin: span budgets for any project's tests, with no setup.

Installed with the package (entry point ``pytest11``); nothing to configure, no engine to
instrument. Every SQLAlchemy engine of the test process is watched from the start of the session
(sync or async, created anywhere, Flask-SQLAlchemy's too), so the budgets of
:mod:`latency_lab.telemetry.testing` work in any test::

    from latency_lab.telemetry.testing import assert_max_queries, assert_no_n_plus_one

    def test_book_listing(client):
        with assert_max_queries(2), assert_no_n_plus_one():
            client.get("/books")

Markers put a budget on a whole test (its call phase, not its fixtures); ``pytest --markers``
lists them:

* ``@pytest.mark.max_queries(3)``: at most 3 statements;
* ``@pytest.mark.queries(2)``: exactly 2;
* ``@pytest.mark.no_n_plus_one(threshold=5, allow=["Book.author"])``: no N+1 but the allowed;
* ``@pytest.mark.allow_n_plus_one("Book.author")``: accepted in every N+1 budget of the test.

The ``spans`` fixture is a :class:`latency_lab.telemetry.testing.SpanCapture`: the test's spans and
statements, and the budgets as methods. When a test that used ``spans`` fails, its report gets a
"Captured statements" section: every statement it ran, the repeated ones grouped, and any N+1
with its fix (a failed budget already says all that in its message, so it gets no extra section).

Importing this module is cheap; SQLAlchemy and OpenTelemetry load at ``pytest_configure``, when
the engine watch is installed (the listeners cost nothing while no budget is running).
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import SpanCapture

REPORT_SECTION = "Captured statements"
# Where the captures live (latency_lab.telemetry.testing exports them).
_CAPTURE = __name__.rpartition(".")[0] + ".capture"
_MARKER_NOTE = "Span budget of this test's marker (latency_lab)"
MARKERS = (
    "max_queries(maximum): the test may run at most `maximum` database statements "
    "(latency_lab span budget).",
    "queries(expected): the test runs exactly `expected` database statements "
    "(latency_lab span budget).",
    "no_n_plus_one(threshold=5, allow=()): no statement shape repeated `threshold` times in the "
    "test, except the relationships in `allow` (latency_lab span budget).",
    "allow_n_plus_one(*relationships): accept these N+1s (e.g. 'Book.author') in every "
    "N+1 budget of the test (latency_lab).",
)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    from . import engine_watch

    engine_watch.install()


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    """Spans and statements of this test, with the span budgets
    (``latency_lab.telemetry.testing``)."""
    from .testing import SpanCapture

    with SpanCapture.start() as capture:
        yield capture


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Run the test inside the budgets its markers ask for."""
    budgets = _marker_budgets(item)
    if not budgets:
        return (yield)
    from .testing import SpanBudgetError

    body_passed = False
    try:
        with ExitStack() as stack:
            for budget in budgets:
                stack.enter_context(budget)
            result = yield
            body_passed = True
    except SpanBudgetError as error:
        if body_passed:  # a marker's budget, not one inside the test: no traceback to show
            error.add_note(_MARKER_NOTE)
        raise
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """End the capture a budget started for a test that did not ask for ``spans``."""
    try:
        return (yield)
    finally:
        capture = sys.modules.get(_CAPTURE)
        if capture is not None:
            capture.stop_on_demand_captures()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the captured statements to a failed test's report (budget failures list them already)."""
    report = yield
    if report.when != "call" or not report.failed or call.excinfo is None:
        return report
    if _MARKER_NOTE in getattr(call.excinfo.value, "__notes__", ()):
        report.longrepr = f"{_MARKER_NOTE}:\n{call.excinfo.value}"
        return report
    capture = getattr(item, "funcargs", {}).get("spans")
    if capture is None:
        return report
    from .testing import SpanBudgetError, SpanCapture

    if isinstance(capture, SpanCapture) and not call.excinfo.errisinstance(SpanBudgetError):
        report.sections.append((REPORT_SECTION, capture.report()))
    return report


def _marker_budgets(item: pytest.Item) -> list[AbstractContextManager[object]]:
    """The context managers for the test's budget markers; the allowances come first."""
    markers = {
        name: item.get_closest_marker(name)
        for name in ("allow_n_plus_one", "queries", "max_queries", "no_n_plus_one")
    }
    if not any(markers.values()):
        return []
    from . import testing

    budgets: list[AbstractContextManager[object]] = []
    if (allow := markers["allow_n_plus_one"]) is not None:
        budgets.append(testing.allowing_n_plus_one(allow.args))
    if (exact := markers["queries"]) is not None:
        budgets.append(testing.assert_queries(*exact.args, **exact.kwargs))
    if (maximum := markers["max_queries"]) is not None:
        budgets.append(testing.assert_max_queries(*maximum.args, **maximum.kwargs))
    if (n_plus_one := markers["no_n_plus_one"]) is not None:
        budgets.append(testing.assert_no_n_plus_one(*n_plus_one.args, **n_plus_one.kwargs))
    return budgets
