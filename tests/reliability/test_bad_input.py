"""Bad input, on purpose: malformed JSON, wrong types, unknown fields, huge numbers, odd unicode,
SQL injection, oversized bodies. Each gets a clear 4xx JSON error, and the data is unchanged.

On SQLite; the field validation cases run on PostgreSQL too (when one answers), which refuses
some text SQLite stores (NUL characters)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latency_lab.service.models import LeadStatus
from tests.lab_fixtures import Lab, ThirdParty, make_lab

VALID = {"company": "Bania Foods", "contact_name": "Kenny Bania",
         "email": "kenny@bania.example", "owner_id": 4}  # fmt: skip
INJECTIONS = (
    "'; DROP TABLE leads; --",
    "1 OR 1=1",
    "' OR '1'='1",
    '"; DELETE FROM users; --',
    "1; UPDATE leads SET score = 0",
    "%' UNION SELECT email FROM users --",
)


@pytest.fixture
def lab(sqlite_url: str, lab_redis: str, thirdparty: ThirdParty, tmp_path: Path) -> Iterator[Lab]:
    """This module's lab: SQLite only (see ``any_db_lab``)."""
    lab = make_lab(sqlite_url, lab_redis, thirdparty.url, tmp_path)
    yield lab
    lab.close()


@pytest.fixture
def any_db_lab(lab_factory: Callable[..., Lab]) -> Lab:
    """On SQLite, and on PostgreSQL when one answers."""
    return lab_factory()


def fingerprint(lab: Lab) -> str:
    """Every lead as the API shows it: any change to the data changes this."""
    pages = [
        lab.get(f"/api/leads?limit=500&offset={o}", toggles="eager_loading=on").json
        for o in (0, 500)
    ]
    leads = [lead for page in pages for lead in page["leads"]]
    return hashlib.sha256(json.dumps(leads, sort_keys=True).encode()).hexdigest()


def assert_clear_error(response: Any, status: int | tuple[int, ...]) -> dict[str, Any]:
    wanted = status if isinstance(status, tuple) else (status,)
    assert response.status_code in wanted, (response.status_code, response.data[:300])
    assert response.is_json, response.data[:200]
    body: dict[str, Any] = response.json
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def post_raw(lab: Lab, data: bytes | str, content_type: str = "application/json") -> Any:
    return lab.client.post("/api/leads", data=data, content_type=content_type)


# --- creating leads ----------------------------------------------------------------------------
MALFORMED: list[tuple[str, int | tuple[int, ...]]] = [
    ("{oops", 400),
    ("", 400),
    ("[" * 50_000 + "]" * 50_000, (400, 413)),  # nesting deeper than the JSON parser goes
    ("[1, 2]", 422),
    ('"just a string"', 422),
    ("null", 400),
    ('{"company": "x", "company": "y"}', 422),
    ("NaN", 422),
]


def test_malformed_json_is_refused_and_nothing_changes(lab: Lab) -> None:
    before = fingerprint(lab)
    for body, status in MALFORMED:
        assert_clear_error(post_raw(lab, body), status)
    assert fingerprint(lab) == before


def test_a_body_that_is_not_json_is_415(lab: Lab) -> None:
    assert_clear_error(post_raw(lab, "company=x", "application/x-www-form-urlencoded"), 415)


def test_an_oversized_body_is_413(lab: Lab) -> None:
    before = fingerprint(lab)
    body = json.dumps({**VALID, "metadata": {"notes": "x" * 100_000}})
    assert assert_clear_error(post_raw(lab, body), 413)["error"] == "request body too large"
    assert fingerprint(lab) == before


WRONG_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"owner_id": "4"}, "owner_id"),
    ({"owner_id": 4.0}, "owner_id"),
    ({"owner_id": True}, "owner_id"),
    ({"owner_id": 2**64}, "owner_id"),
    ({"owner_id": -(2**63)}, "owner_id"),
    ({"score": 10**30}, "score"),
    ({"score": 1e309}, "score"),  # infinity once parsed
    ({"score": -1}, "score"),
    ({"tags": "hot"}, "tags"),
    ({"tags": ["x" * 61]}, "tags.0"),
    ({"tags": [f"t{n}" for n in range(21)]}, "tags"),
    ({"metadata": []}, "metadata"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"status": "pending"}, "status"),
    ({"email": "not an email"}, "email"),
    ({"company": ""}, "company"),
    ({"company": "x" * 201}, "company"),
    ({"admin": True}, "admin"),
    ({"id": 1}, "id"),
    ({"company": "Acme\u0000Corp"}, "company"),
    ({"contact_name": "\ud800"}, "contact_name"),  # a lone surrogate: not text
    ({"metadata": {"source\u0000": "x"}}, "metadata.source\u0000.[key]"),
]


def test_wrong_values_get_422_naming_the_field_and_nothing_changes(any_db_lab: Lab) -> None:
    before = fingerprint(any_db_lab)
    for change, field in WRONG_VALUES:
        response = any_db_lab.client.post("/api/leads", json={**VALID, **change})
        body = assert_clear_error(response, 422)
        assert field in [f["field"] for f in body["fields"]], (change, body)
    assert fingerprint(any_db_lab) == before


def test_sql_injection_strings_are_stored_as_text(any_db_lab: Lab) -> None:
    for text in INJECTIONS:
        response = any_db_lab.client.post(
            "/api/leads", json={**VALID, "company": text, "metadata": {"note": text}}
        )
        assert response.status_code == 201
        stored = any_db_lab.get(f"/api/leads/{response.json['id']}").json
        assert (stored["company"], stored["metadata"]["note"]) == (text.strip(), text)
    # nothing dropped, nothing extra
    assert any_db_lab.get("/api/leads?limit=1").json["total"] == 120 + len(INJECTIONS)


def test_unicode_round_trips(lab: Lab) -> None:
    text = "Ünïcødé Гостиница 株式会社 🚀 e\u0301"
    response = lab.client.post("/api/leads", json={**VALID, "company": text})

    assert response.status_code == 201
    assert lab.get(f"/api/leads/{response.json['id']}").json["company"] == text


# --- reading and changing -------------------------------------------------------------------
BAD_QUERIES = [
    "limit=100000000000000000000",
    "limit=1e3",
    "limit=0x10",
    "offset=-5",
    "offset=99999999999",
    "limit=%00",
    "status=new' OR '1'='1",
    "tag=%00",
    "tag=" + "t" * 61,
    "unknown=1",
]


def test_bad_query_parameters_are_400(any_db_lab: Lab) -> None:
    for query in BAD_QUERIES:
        assert_clear_error(any_db_lab.get(f"/api/leads?{query}"), 400)


def test_injection_in_a_filter_matches_nothing(lab: Lab) -> None:
    for text in INJECTIONS:
        response = lab.client.get("/api/leads", query_string={"tag": text})
        assert response.status_code == 200
        assert response.json["leads"] == [] and response.json["total"] == 0


def test_lead_ids_out_of_range_are_404(any_db_lab: Lab) -> None:
    for path in ("/api/leads/99999999999999999999", "/api/leads/2147483648", "/api/leads/-1",
                 "/api/leads/1.5", "/api/leads/%00", "/api/leads/0"):  # fmt: skip
        assert_clear_error(any_db_lab.get(path), 404)
        assert_clear_error(any_db_lab.client.patch(path, json={"score": 5}), 404)


def test_bad_patches_are_refused_and_nothing_changes(lab: Lab) -> None:
    before = fingerprint(lab)
    for body in ({}, {"status": "bogus"}, {"score": -1}, {"score": "10"}, {"score": 2**70},
                 {"status": None, "score": None}, {"owner_id": 1}, [1], "won"):  # fmt: skip
        assert_clear_error(lab.client.patch("/api/leads/3", json=body), 422)
    assert fingerprint(lab) == before


def test_bad_toggle_overrides_are_400(lab: Lab) -> None:
    for header in ("eager_loading=maybe", "warp_drive=on", "eager_loading", "=on",
                   "eager_loading=on;drop"):  # fmt: skip
        response = lab.get("/api/leads?limit=1", headers={"X-Lab-Toggles": header})
        assert_clear_error(response, 400)


# --- anything at all ------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
lead_like = st.fixed_dictionaries(
    {},
    optional={
        "company": json_values | st.text(st.characters(codec=None), max_size=60),
        "contact_name": json_values,
        "email": json_values | st.emails(),
        "owner_id": json_values | st.integers(),
        "status": json_values | st.sampled_from([s.value for s in LeadStatus]),
        "score": json_values,
        "tags": json_values,
        "metadata": json_values,
    },
) | st.dictionaries(st.text(max_size=10), json_values, max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=lead_like)
def test_no_body_makes_create_fail(lab: Lab, body: dict[str, Any]) -> None:
    response = lab.client.post("/api/leads", json=body)

    assert response.status_code in (201, 422), (response.status_code, response.json)
    assert response.is_json and (response.status_code == 201 or response.json["error"])


# --- the admin API --------------------------------------------------------------------------
def test_bad_toggles_are_400_and_change_nothing(lab: Lab) -> None:
    before = lab.client.get("/admin/toggles").json
    bodies: list[Any] = [
        {"warp_drive": True}, {"eager_loading": "yes"}, {"eager_loading": 1},
        {"eager_loading": None}, [], "on", {"eager_loading": {"on": True}},
    ]  # fmt: skip
    for body in bodies:
        assert_clear_error(lab.client.put("/admin/toggles", json=body), 400)
    for raw in ("{oops", "[" * 50_000, ""):
        response = lab.client.put("/admin/toggles", data=raw, content_type="application/json")
        assert_clear_error(response, 400)
    assert lab.client.get("/admin/toggles").json == before


BAD_WORLDS = [
    {"db_round_trip_ms": -1}, {"db_round_trip_ms": 1e309}, {"db_round_trip_ms": "fast"},
    {"email": {"failure_rate": 2}}, {"email": {"latency_ms": -5}}, {"email": "slow"},
    {"third_party_timeout_s": 0}, {"warp": 9}, {"email": {"warp": 1}}, [], None,
]  # fmt: skip


def test_bad_world_values_are_400_and_change_nothing(lab: Lab) -> None:
    before = lab.client.get("/admin/world").json
    raw_bodies = [json.dumps(body) for body in BAD_WORLDS]
    raw_bodies += ['{"db_round_trip_ms": NaN}', '{"email": {"failure_rate": Infinity}}', "{oops"]
    for raw in raw_bodies:
        response = lab.client.put("/admin/world", data=raw, content_type="application/json")
        assert "error" in assert_clear_error(response, 400), raw
    assert lab.client.get("/admin/world").json == before
