"""The ``latency_lab`` pytest plugin: the ``spans`` fixture for span budgets.

Installed with the package (entry point ``pytest11``), so any test can ask for ``spans``::

    from telemetry.testing import assert_no_n_plus_one, assert_queries

    def test_author_listing(spans, app, client):
        spans.instrument_engine(app.extensions["db"].engine)
        with assert_queries(2), assert_no_n_plus_one():
            client.get("/authors")

The fixture is a :class:`telemetry.testing.SpanCapture`; see :mod:`telemetry.testing` for the
budgets. When a test that used ``spans`` fails, its report gets a "Captured statements" section:
every statement it ran, the repeated ones grouped, and any N+1 with its fix (a failed budget
already says all that in its message, so it gets no extra section).

Importing this module costs nothing: OpenTelemetry and SQLAlchemy load only when a test asks
for the fixture, because pytest imports every installed plugin at start-up.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from telemetry.testing import SpanCapture

REPORT_SECTION = "Captured statements"


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    """Spans finished during this test, with statement budgets (``telemetry.testing``)."""
    from telemetry.testing import SpanCapture

    with SpanCapture.start() as capture:
        yield capture


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the captured statements to a failed test's report (budget failures list them already)."""
    report = yield
    if report.when != "call" or not report.failed or call.excinfo is None:
        return report
    capture = getattr(item, "funcargs", {}).get("spans")
    if capture is None:
        return report
    from telemetry.testing import SpanBudgetError, SpanCapture

    if isinstance(capture, SpanCapture) and not call.excinfo.errisinstance(SpanBudgetError):
        report.sections.append((REPORT_SECTION, capture.report()))
    return report
