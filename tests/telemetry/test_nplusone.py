"""N+1 detection: statement shapes, findings and fixes, on unit input and on real lazy loading."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from latency_lab.telemetry.nplusone import (
    API_FIX,
    GENERIC_QUERY_FIX,
    Finding,
    StatementRecord,
    detect_n_plus_one,
    normalize_statement,
    relationship_kinds,
)
from latency_lab.telemetry.testing import SpanCapture
from tests.telemetry.sample_app.models import Base


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("SELECT * FROM users WHERE users.id = 7", "SELECT * FROM users WHERE users.id = 12"),
        ("SELECT * FROM t WHERE id = %(id_1)s", "SELECT * FROM t WHERE id = ?"),
        ("SELECT * FROM t WHERE id = $1", "SELECT * FROM t WHERE id = :id"),
        ("SELECT * FROM t WHERE name = 'ann'", "SELECT * FROM t WHERE name = 'O''Brien'"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (?)"),
        ("SELECT * FROM t WHERE id IN (%s, %s)", "select * from t where id in (?, ?, ?, ?)"),
        ("SELECT *\n  FROM t\tWHERE x = 1;", "SELECT * FROM t WHERE x = 2"),
        ("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)", "INSERT INTO t (a, b) VALUES (1, 2)"),
        ("SELECT * FROM t /* traceparent='00-ab' */ WHERE x = 1", "SELECT * FROM t WHERE x = 2"),
    ],
)
def test_statements_differing_only_in_values_share_a_shape(first: str, second: str) -> None:
    assert normalize_statement(first).lower() == normalize_statement(second).lower()


def test_shapes_keep_identifiers_and_casts() -> None:
    shape = normalize_statement("SELECT t1.col2, x::text FROM table_3 t1 WHERE t1.id = 5 LIMIT 10")
    assert shape == "SELECT t1.col2, x::text FROM table_3 t1 WHERE t1.id = ? LIMIT ?"


def _lazy_loads(count: int, relationship: str | None = "Lead.owner") -> list[StatementRecord]:
    return [
        StatementRecord(f"SELECT * FROM users WHERE users.id = {i}", 1.5, relationship)
        for i in range(count)
    ]


def test_repeated_shape_at_threshold_is_a_finding_with_totals() -> None:
    statements = [StatementRecord("SELECT * FROM leads LIMIT 100", 3.0), *_lazy_loads(5)]
    [finding] = detect_n_plus_one(statements, threshold=5)
    assert finding.kind == "n_plus_one_query"
    assert finding.count == 5
    assert finding.total_ms == pytest.approx(7.5)
    assert finding.shape == "SELECT * FROM users WHERE users.id = ?"
    assert finding.example == "SELECT * FROM users WHERE users.id = 0"
    assert finding.relationship == "Lead.owner"
    assert finding.fix == "joinedload(Lead.owner)"


def test_below_threshold_or_distinct_statements_are_not_findings() -> None:
    assert detect_n_plus_one(_lazy_loads(4), threshold=5) == []
    distinct = [StatementRecord(f"SELECT * FROM table_{chr(97 + i)}", 9.0) for i in range(10)]
    assert detect_n_plus_one(distinct, threshold=2) == []


@pytest.mark.parametrize(
    ("relationship", "fix"),
    [
        ("Lead.tags", "selectinload(Lead.tags)"),
        ("Lead.metadata", "selectinload(Lead.metadata)"),
        ("Order.line_items", "selectinload(Order.line_items)"),
        ("Lead.owner", "joinedload(Lead.owner)"),
        ("Lead.status", "joinedload(Lead.status)"),
        (None, GENERIC_QUERY_FIX),
    ],
)
def test_fix_guessed_from_the_relationship_name(relationship: str | None, fix: str) -> None:
    [finding] = detect_n_plus_one(_lazy_loads(6, relationship))
    assert finding.fix == fix


def test_fix_follows_the_mapper_when_kinds_are_given() -> None:
    kinds = relationship_kinds(Base.registry)
    assert kinds == {"Author.books": True, "Book.author": False}
    [finding] = detect_n_plus_one(
        _lazy_loads(6, "Lead.status"), relationship_kinds={"Lead.status": True}
    )
    assert finding.fix == "selectinload(Lead.status)"


def test_repeated_inline_provider_calls_are_an_api_finding() -> None:
    findings = detect_n_plus_one([], calls=["email"] * 6 + ["analytics"] * 2, threshold=5)
    assert [(f.kind, f.shape, f.count, f.fix) for f in findings] == [
        ("n_plus_one_api", "email", 6, API_FIX)
    ]


def test_findings_sorted_slowest_first_and_round_trip_as_json() -> None:
    slow = [
        StatementRecord(f"SELECT * FROM tags WHERE id = {i}", 4.0, "Lead.tags") for i in range(5)
    ]
    findings = detect_n_plus_one([*_lazy_loads(8), *slow], calls=["email"] * 5)
    assert [f.relationship or f.shape for f in findings] == ["Lead.tags", "Lead.owner", "email"]
    assert Finding.loads(Finding.dumps(findings)) == findings
    assert (
        Finding.loads(
            '[{"kind": "n_plus_one_api", "shape": "x", "example": "x", "count": 5,'
            ' "total_ms": 0, "from_a_newer_version": 1}]'
        )[0].count
        == 5
    )


# --- on a real app: SQLAlchemy lazy loading, traced --------------------------------------------
def test_lazy_collection_loading_is_found_with_selectinload_fix(
    spans: SpanCapture, client: FlaskClient
) -> None:
    spans.clear()
    assert client.get("/authors").status_code == 200
    [finding] = detect_n_plus_one(spans.statements())
    assert (finding.relationship, finding.count) == ("Author.books", 8)
    assert finding.fix == "selectinload(Author.books)"
    assert "FROM books WHERE ? = books.author_id" in finding.shape


def test_lazy_many_to_one_loading_is_found_with_joinedload_fix(
    spans: SpanCapture, client: FlaskClient
) -> None:
    spans.clear()
    client.get("/books")
    [finding] = detect_n_plus_one(spans.statements())
    assert (finding.relationship, finding.count) == ("Book.author", 8)
    assert finding.fix == "joinedload(Book.author)"


def test_eager_loading_has_no_finding(spans: SpanCapture, client: FlaskClient) -> None:
    spans.clear()
    response = client.get("/authors/eager")
    assert len(response.get_json()) == 8
    assert len(spans.statements()) == 2
    assert detect_n_plus_one(spans.statements(), threshold=2) == []
