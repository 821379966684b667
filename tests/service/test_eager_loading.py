"""The article's N+1: statements per request, lazy vs eager.

The counts are the span budgets' (``latency_lab.telemetry.testing``), as any project using the
plugin would write them; ``Server-Timing`` must carry the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.nplusone import Finding
from latency_lab.telemetry.testing import (
    SpanBudgetError,
    assert_max_queries,
    assert_no_n_plus_one,
    assert_queries,
)
from tests.lab_fixtures import Lab, trace_id_of

LIST_SIZES = (1, 10, 50)
LOADER = "X-Lab-Loader"
# Per request, whatever N is: the article's single JOIN, the textbook selectin (page + one
# IN (...) per relationship), plain rows (page with its owner + tags + metadata), and the
# database-built JSON (the default).
EAGER_STATEMENTS = {"joined": 1, "selectin": 4, "rows": 3, "json": 1}


@pytest.mark.parametrize("size", LIST_SIZES)
def test_lazy_loading_costs_one_plus_three_n_statements(lab: Lab, size: int) -> None:
    with assert_queries(1 + 3 * size):
        response = lab.get(f"/api/leads?limit={size}", toggles="eager_loading=off")

    assert response.status_code == 200
    assert len(response.json["leads"]) == size
    assert f'desc="{1 + 3 * size} statements"' in response.headers["Server-Timing"]


@pytest.mark.parametrize(("loader", "statements"), EAGER_STATEMENTS.items())
def test_each_eager_loader_runs_the_same_statements_whatever_the_size(
    lab: Lab, loader: str, statements: int
) -> None:
    for size in LIST_SIZES:
        with assert_queries(statements):
            response = lab.get(
                f"/api/leads?limit={size}", toggles="eager_loading=on", headers={LOADER: loader}
            )

        assert len(response.json["leads"]) == size
        assert f'desc="{statements} statements"' in response.headers["Server-Timing"]
        assert lab.server_span(trace_id_of(response)).attributes[v.ORM_LOADER] == loader


def test_the_default_loader_is_json_in_one_statement(lab: Lab) -> None:
    with assert_queries(1):
        response = lab.get("/api/leads?limit=10", toggles="eager_loading=on")

    assert 'desc="1 statements"' in response.headers["Server-Timing"]
    assert lab.server_span(trace_id_of(response)).attributes[v.ORM_LOADER] == "json"


@pytest.mark.parametrize("size", LIST_SIZES)
def test_selectin_loading_is_four_statements_whatever_the_size(
    lab_factory: Callable[..., Lab], size: int
) -> None:
    selectin = lab_factory(LAB_LOADER_STRATEGY="selectin")

    with assert_queries(4):
        response = selectin.get(f"/api/leads?limit={size}", toggles="eager_loading=on")

    assert 'desc="4 statements"' in response.headers["Server-Timing"]


def test_json_is_identical_lazy_or_eager(lab: Lab) -> None:
    path = "/api/leads?limit=25&offset=10"
    lazy = lab.get(path, toggles="eager_loading=off")
    eager = [
        lab.get(path, toggles="eager_loading=on", headers={LOADER: loader})
        for loader in EAGER_STATEMENTS
    ]

    assert all(response.data == lazy.data for response in eager)  # the bytes, not only the JSON
    assert lazy.json["leads"][0]["owner"]["name"]
    assert lazy.json["leads"][0]["tags"] and lazy.json["leads"][0]["metadata"]


def test_filters_keep_the_statement_count(lab: Lab) -> None:
    with assert_max_queries(1 + 3 * 5) as lazy_block:  # at most 5 leads
        lazy = lab.get("/api/leads?limit=5&status=new&tag=hot", toggles="eager_loading=off")
    with assert_queries(1):
        eager = lab.get("/api/leads?limit=5&status=new&tag=hot", toggles="eager_loading=on")

    leads = lazy.json["leads"]
    assert leads == eager.json["leads"]
    assert all(lead["status"] == "new" and "hot" in lead["tags"] for lead in leads)
    assert len(lazy_block.statements()) == 1 + 3 * len(leads)


def test_lazy_request_carries_n_plus_one_findings_naming_the_relationships(lab: Lab) -> None:
    with pytest.raises(SpanBudgetError) as budget, assert_no_n_plus_one():
        response = lab.get("/api/leads?limit=20", toggles="eager_loading=off")

    for relationship in ("Lead.owner", "Lead.tags", "Lead.metadata_entries"):
        assert f"{relationship}: 20 statements (threshold 5," in str(budget.value)
    span = lab.server_span(trace_id_of(response))
    findings = Finding.loads(span.attributes[v.REQ_N_PLUS_ONE])
    assert {f.relationship for f in findings} == {
        "Lead.owner",
        "Lead.tags",
        "Lead.metadata_entries",
    }
    assert all(f.count == 20 for f in findings)


def test_eager_request_has_no_findings(lab: Lab) -> None:
    with assert_no_n_plus_one():
        response = lab.get("/api/leads?limit=20", toggles="eager_loading=on")

    span = lab.server_span(trace_id_of(response))
    assert v.REQ_N_PLUS_ONE not in span.attributes


def test_all_statements_are_children_of_the_server_span(lab: Lab) -> None:
    response = lab.get("/api/leads?limit=5", toggles="eager_loading=off")
    trace_id = trace_id_of(response)
    spans = [s for s in lab.spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    by_id = {s.context.span_id: s for s in spans}
    server = lab.server_span(trace_id)

    def root_of(span):
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
        return span

    db_spans = [s for s in spans if v.db_statement(s.attributes) is not None]
    assert len(db_spans) == 16
    assert all(root_of(s) is server for s in db_spans)


def test_loader_header_picks_selectin_for_one_request(lab: Lab) -> None:
    with assert_queries(1):
        default = lab.get("/api/leads?limit=10", toggles="eager_loading=on")
    with assert_queries(4):
        selectin = lab.get(
            "/api/leads?limit=10", toggles="eager_loading=on", headers={LOADER: "selectin"}
        )

    assert default.json == selectin.json
    assert lab.server_span(trace_id_of(selectin)).attributes[v.ORM_LOADER] == "selectin"


@pytest.mark.parametrize("loader", ["psychic", "lazy", "JSON", ""])
def test_unknown_loader_is_a_400_naming_every_loader(lab: Lab, loader: str) -> None:
    response = lab.get("/api/leads", headers={LOADER: loader})

    assert response.status_code == 400
    assert response.json["error"] == (
        f"X-Lab-Loader must be joined, selectin, rows or json, got {loader!r}"
    )
