"""The lead API as a client sees it: contents, headers, and clear errors for bad input."""

from __future__ import annotations

import pytest

from tests.lab_fixtures import Lab

VALID = {
    "company": "Umbrella",
    "contact_name": "Alice Abernathy",
    "email": "alice@umbrella.example",
    "owner_id": 4,
}


def test_list_has_total_and_respects_limit_and_offset(lab: Lab) -> None:
    first = lab.get("/api/leads?limit=10").json
    second = lab.get("/api/leads?limit=10&offset=10").json

    assert first["total"] == 120
    assert [lead["id"] for lead in first["leads"]] == list(range(1, 11))
    assert [lead["id"] for lead in second["leads"]] == list(range(11, 21))


def test_default_page_is_100(lab: Lab) -> None:
    assert len(lab.get("/api/leads").json["leads"]) == 100


def test_page_past_the_end_is_empty_but_keeps_the_total(lab: Lab) -> None:
    body = lab.get("/api/leads?offset=5000").json

    assert body["leads"] == []
    assert body["total"] == 120


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("status=pending", "status"),
        ("color=red", "color"),
    ],
)
def test_bad_query_parameters_get_400_naming_the_field(lab: Lab, query: str, field: str) -> None:
    response = lab.get(f"/api/leads?{query}")

    assert response.status_code == 400
    assert [f["field"] for f in response.json["fields"]] == [field]


def test_unknown_lead_is_404(lab: Lab) -> None:
    response = lab.get("/api/leads/99999")

    assert response.status_code == 404
    assert "99999" in response.json["error"]


def test_create_returns_the_lead_with_relationships(lab: Lab) -> None:
    response = lab.client.post(
        "/api/leads", json={**VALID, "tags": ["hot", "vip"], "metadata": {"source": "ads"}}
    )

    assert response.status_code == 201
    lead = response.json
    assert lead["owner"]["id"] == 4
    assert lead["tags"] == ["hot", "vip"]
    assert lead["metadata"] == {"source": "ads"}
    assert lab.get(f"/api/leads/{lead['id']}").json["company"] == "Umbrella"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"owner_id": 999}, "owner_id"),
        ({"owner_id": "4"}, "owner_id"),
        ({"score": 101}, "score"),
        ({"status": "pending"}, "status"),
        ({"tags": ["no-such-tag"]}, "tags"),
        ({"company": ""}, "company"),
        ({"admin": True}, "admin"),
    ],
)
def test_invalid_leads_get_422_naming_the_field(
    lab: Lab, change: dict[str, object], field: str
) -> None:
    before = lab.get("/api/leads?limit=1").json["total"]

    response = lab.client.post("/api/leads", json={**VALID, **change})

    assert response.status_code == 422
    assert field in [f["field"] for f in response.json["fields"]]
    assert lab.get("/api/leads?limit=1").json["total"] == before


def test_malformed_json_is_400(lab: Lab) -> None:
    response = lab.client.post("/api/leads", data="{oops", content_type="application/json")

    assert response.status_code == 400
    assert response.json["error"] == "malformed JSON body"


def test_oversized_body_is_413(lab: Lab) -> None:
    response = lab.client.post("/api/leads", json={**VALID, "company": "x" * 200_000})

    assert response.status_code == 413
    assert "too large" in response.json["error"]


def test_patch_changes_status_and_rejects_empty_changes(lab: Lab) -> None:
    assert lab.client.patch("/api/leads/3", json={"status": "won"}).json["status"] == "won"
    assert lab.client.patch("/api/leads/3", json={}).status_code == 422
    assert lab.client.patch("/api/leads/99999", json={"status": "won"}).status_code == 404


def test_stats_add_up(lab: Lab) -> None:
    stats = lab.get("/api/stats").json

    assert stats["total"] == 120
    assert sum(stats["by_status"].values()) == 120
    assert stats["funnel"][0] == {
        "stage": "new",
        "reached": 120 - stats["by_status"].get("lost", 0),
    }
    assert 0 <= stats["average_score"] <= 100


def test_every_response_has_server_timing_and_traceresponse(lab: Lab) -> None:
    for path in (
        "/api/leads?limit=2",
        "/api/leads/1",
        "/api/stats",
        "/",
        "/api/leads/0",
        "/static/app.js",
        "/openapi.json",
    ):
        response = lab.get(path)
        assert "db;dur=" in response.headers["Server-Timing"], path
        assert response.headers["traceresponse"].startswith("00-"), path


def test_responses_are_no_store_unless_the_edge_cache_is_on(lab: Lab) -> None:
    off = lab.get("/api/leads?limit=2", toggles="edge_cache=off")
    on = lab.get("/api/leads?limit=2", toggles="edge_cache=on")
    static = lab.get("/static/app.js", toggles="edge_cache=on")

    assert off.headers["Cache-Control"] == "no-store"
    assert "s-maxage=" in on.headers["Cache-Control"] and on.headers["ETag"]
    assert "public" in static.headers["Cache-Control"]
    assert lab.get("/admin/toggles", toggles="edge_cache=on").headers["Cache-Control"] == "no-store"


def test_openapi_describes_every_route(lab: Lab) -> None:
    document = lab.get("/openapi.json").json

    assert document["openapi"].startswith("3.")
    assert {
        "/api/leads",
        "/api/leads/{lead_id}",
        "/api/stats",
        "/admin/toggles",
        "/admin/world",
        "/healthz",
        "/",
    } <= set(document["paths"])
    assert "LeadCreate" in document["components"]["schemas"]


def test_healthz_reports_database_redis_and_dropped_spans(lab: Lab) -> None:
    body = lab.get("/healthz").json

    assert body["status"] == "ok" and body["database"] == "ok" and body["redis"] == "ok"
    assert body["telemetry"]["dropped_spans"] == 0
