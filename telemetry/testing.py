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

from latency_lab.telemetry.budgets import (
    SpanBudgetError,
    allowing_n_plus_one,
    assert_cache_hit,
    assert_max_queries,
    assert_no_n_plus_one,
    assert_offloaded,
    assert_queries,
)
from latency_lab.telemetry.capture import (
    SpanCapture,
    SpanWindow,
    current_capture,
    inline_calls_of,
    named,
    statements_of,
    stop_on_demand_captures,
)
from latency_lab.telemetry.orm import instrument_engine

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
    "inline_calls_of",
    "instrument_engine",
    "named",
    "statements_of",
    "stop_on_demand_captures",
]
