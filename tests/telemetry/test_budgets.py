"""Span budgets, used the way another project would: the `spans` fixture on its own Flask app."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.testing import (
    SpanCapture,
    assert_cache_hit,
    assert_max_queries,
    assert_no_n_plus_one,
    assert_offloaded,
    assert_queries,
)
from tests.telemetry.sample_app import WELCOME_JOB, create_app


def test_eager_listing_fits_an_exact_budget(client: FlaskClient) -> None:
    with assert_queries(2), assert_no_n_plus_one():
        response = client.get("/authors/eager")
    assert len(response.get_json()) == 8


def test_only_statements_inside_the_block_count(spans: SpanCapture, client: FlaskClient) -> None:
    spans.clear()  # the app's schema and seed
    client.get("/authors")  # 9 statements before the block
    with assert_max_queries(2) as block:
        client.get("/authors/eager")
    assert len(block.statements()) == 2
    assert len(spans.statements()) == 11


def test_statements_are_counted_not_spans(spans: SpanCapture) -> None:
    """The SQLAlchemy instrumentation's `connect` span has no statement: it is no query."""
    with assert_queries(1):
        with spans.tracer.start_as_current_span("connect") as connect:
            connect.set_attribute("db.system", "sqlite")
        with spans.tracer.start_as_current_span("SELECT") as select:
            select.set_attribute("db.statement", "SELECT 1")


def test_stable_semconv_statement_key_counts_too(spans: SpanCapture) -> None:
    with assert_queries(1), spans.tracer.start_as_current_span("SELECT") as select:
        select.set_attribute("db.query.text", "SELECT 1")


def test_server_span_is_captured_with_the_route(spans: SpanCapture, client: FlaskClient) -> None:
    client.get("/authors/eager")
    [server] = [s for s in spans.finished() if s.attributes and s.attributes.get("http.route")]
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/authors/eager"


def test_lazy_listing_breaks_the_budget_with_grouped_statements(client: FlaskClient) -> None:
    with pytest.raises(AssertionError) as failure, assert_max_queries(3):
        client.get("/authors")
    message = str(failure.value)
    assert message.startswith("Expected at most 3 database statements, 9 were executed:")
    assert "8x SELECT books.id" in message
    assert "WHERE ? = books.author_id" in message
    assert "Author.books: 8 statements" in message
    assert "fix: selectinload(Author.books)" in message


def test_long_statements_keep_their_where_clause_in_the_message(spans: SpanCapture) -> None:
    columns = ", ".join(f"users.column_{n} AS users_column_{n}" for n in range(12))
    statement = f"SELECT users.id AS users_id, {columns} FROM users WHERE users.id = ?"
    with pytest.raises(AssertionError) as failure, assert_max_queries(1):
        for _ in range(6):
            with spans.tracer.start_as_current_span("SELECT") as span:
                span.set_attribute("db.statement", statement)
    assert "6x SELECT users.id, ... FROM users WHERE users.id = ?" in str(failure.value)
    assert "users.id = ?: 6 statements" in str(failure.value)  # no relationship known
    assert "fix: load the related rows up front" in str(failure.value)


def test_many_to_one_n_plus_one_names_joinedload(client: FlaskClient) -> None:
    with (
        pytest.raises(
            AssertionError, match=r"Book\.author: 8 statements .*joinedload\(Book\.author\)"
        ),
        assert_no_n_plus_one(),
    ):
        client.get("/books")


def test_threshold_is_the_callers(client: FlaskClient) -> None:
    with assert_no_n_plus_one(threshold=9):
        client.get("/authors")  # 8 lazy loads


def test_capture_methods_are_the_same_budgets(spans: SpanCapture, client: FlaskClient) -> None:
    with spans.assert_queries(2):
        client.get("/authors/eager")
    expected = "Expected 0 database statements, 2 were executed"
    with pytest.raises(AssertionError, match=expected), spans.assert_queries(0):
        client.get("/authors/eager")


def test_cache_hit_on_second_request(client: FlaskClient) -> None:
    with (
        pytest.raises(
            AssertionError, match="'app' layer inside the block; lookups seen: app miss x1"
        ),
        assert_cache_hit(v.CacheLayer.APP),
    ):
        client.get("/authors/1/stats")
    with assert_cache_hit("app"), assert_queries(0):
        assert client.get("/authors/1/stats").get_json() == {"books": 2}


def test_cache_hit_without_any_lookup_says_so(spans: SpanCapture) -> None:
    with pytest.raises(AssertionError, match="no cache lookups"), assert_cache_hit("redis"):
        pass


def test_offloaded_email_passes_and_inline_email_fails(spans: SpanCapture) -> None:
    offloading = create_app(offload_email=True).test_client()
    with assert_offloaded("send_welcome_email"):
        assert offloading.post("/authors/1/welcome").status_code == 202

    inline = create_app(offload_email=False).test_client()
    with pytest.raises(AssertionError) as failure, assert_offloaded("send_welcome_email"):
        inline.post("/authors/1/welcome")
    assert "no rq.enqueue span with lab.job.func containing it (enqueued: no jobs at all)" in str(
        failure.value
    )
    assert "it ran inline: 1x third_party.call email" in str(failure.value)
    assert WELCOME_JOB.endswith("send_welcome_email")


def test_repeated_inline_calls_are_an_api_n_plus_one(spans: SpanCapture) -> None:
    inline = create_app().test_client()
    with pytest.raises(AssertionError, match=r"email: 5 calls .*async_offload"):  # noqa: SIM117
        with assert_no_n_plus_one():
            for _ in range(5):
                inline.post("/authors/1/welcome")


def test_budget_without_the_spans_fixture_needs_no_setup() -> None:
    client = create_app().test_client()  # its engine is never instrumented
    with pytest.raises(AssertionError, match="at most 1 database statements, 9 were executed"):  # noqa: SIM117
        with assert_max_queries(1):
            client.get("/authors")


def test_budget_outside_pytest_and_without_capture_explains_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    with pytest.raises(RuntimeError, match=r"pass spans=SpanCapture\.start\(\)"), assert_queries(1):
        pass


def test_statements_traced_by_the_instrumentation_are_counted_once(spans: SpanCapture) -> None:
    app = create_app()
    spans.instrument_engine(app.extensions["library"]["engine"])  # spans, and the watcher
    with assert_queries(2) as block:
        app.test_client().get("/authors/eager")
    assert len([s for s in block.spans if v.db_statement(s.attributes or {})]) == 2


def test_watching_an_apps_own_provider(spans: SpanCapture) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    own = TracerProvider()
    spans.watch(own)
    with assert_queries(1), own.get_tracer("app").start_as_current_span("q") as span:
        span.set_attribute("db.statement", "SELECT 1")


# --- as an outside project runs it: a separate pytest process, plugin from the entry point ------
INNER_TESTS = textwrap.dedent(
    """
    from latency_lab.telemetry.testing import assert_max_queries
    from tests.telemetry.sample_app import create_app

    def test_author_listing_budget():
        client = create_app().test_client()  # no instrument_engine: none is needed
        with assert_max_queries(3):
            client.get("/authors")

    def test_author_listing_content(spans):
        client = create_app().test_client()
        spans.clear()  # the schema and the seed
        assert client.get("/authors").get_json()[0]["name"] == "Nobody"
    """
)


@pytest.fixture
def outside_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytest project of its own, importing the sample app from this checkout."""
    import tests

    checkout = str(Path(next(iter(tests.__path__))).parent)
    monkeypatch.setenv("PYTHONPATH", checkout)
    pytester.makepyfile(test_library=INNER_TESTS)
    return pytester


def test_budget_violation_fails_with_grouped_statements(outside_project: pytest.Pytester) -> None:
    result = outside_project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*SpanBudgetError: Expected at most 3 database statements, 9 were executed:",
            "*1. SELECT authors.id, authors.name FROM authors ORDER BY authors.id",
            "*Repeated statements (same shape, different parameters):",
            "*8x SELECT books.id AS books_id, * FROM books WHERE ? = books.author_id"
            "  [[]Author.books, from */sample_app/__init__.py:* in _author_json]",
            "*N+1 findings (threshold 5):",
            "*Author.books: 8 statements (threshold 5, *ms in total) from"
            " */sample_app/__init__.py:* in _author_json; fix: selectinload(Author.books)",
        ]
    )
    # Any other failure of a test that used `spans` gets the statements as a report section,
    # once: the budget failure above already carries them in its message.
    assert text.count("Captured statements") == 1
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: assert 'Author 1' == 'Nobody'",
            "*Captured statements*",
            "9 database statements:",
        ]
    )
