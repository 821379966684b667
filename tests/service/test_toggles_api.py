"""The toggles and world admin API: validation, and flips seen by another process within 1 s."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.lab_fixtures import Lab, ServiceProcess, eventually


def test_toggles_default_to_the_articles_before(lab: Lab) -> None:
    body = lab.client.get("/admin/toggles").json

    assert body["toggles"] == {
        "eager_loading": False,
        "redis_cache": False,
        "app_cache": False,
        "edge_cache": False,
        "async_offload": False,
    }


def test_put_changes_only_the_named_toggles(lab: Lab) -> None:
    body = lab.client.put("/admin/toggles", json={"redis_cache": True}).json

    assert body["toggles"]["redis_cache"] is True
    assert body["toggles"]["eager_loading"] is False
    assert lab.client.get("/admin/toggles").json == body


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"warp_drive": True}, "unknown toggle(s) warp_drive"),
        ({"eager_loading": "yes"}, "'eager_loading' must be true or false"),
        ({"eager_loading": 1}, "'eager_loading' must be true or false"),
        ([True], "expected a JSON object"),
    ],
)
def test_bad_toggles_get_400_naming_the_problem(lab: Lab, payload: object, message: str) -> None:
    response = lab.client.put("/admin/toggles", json=payload)

    assert response.status_code == 400
    assert message in response.json["error"]
    assert lab.client.get("/admin/toggles").json["toggles"]["eager_loading"] is False


def test_bad_override_header_gets_400(lab: Lab) -> None:
    response = lab.get("/api/leads", toggles="eager_loading=maybe")

    assert response.status_code == 400
    assert "on or off" in response.json["error"]


def test_override_header_from_elsewhere_is_refused(lab: Lab) -> None:
    response = lab.client.get(
        "/api/leads",
        headers={"X-Lab-Toggles": "eager_loading=on"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )

    assert response.status_code == 403


def test_admin_token_is_required_when_set(lab_factory) -> None:
    lab = lab_factory(LAB_ADMIN_TOKEN="s3cret")

    assert lab.client.get("/admin/toggles").status_code == 401
    wrong = lab.client.get("/admin/toggles", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = lab.client.get("/admin/toggles", headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"db_round_trip_ms": -1}, "db_round_trip_ms"),
        ({"analytics": {"failure_rate": 2}}, "analytics.failure_rate"),
        ({"gravity": 9.81}, "gravity"),
    ],
)
def test_bad_world_values_get_400_naming_the_field(lab: Lab, payload: object, field: str) -> None:
    response = lab.client.put("/admin/world", json=payload)

    assert response.status_code == 400
    assert field in response.json["error"]


def test_world_changes_merge_into_the_current_world(lab: Lab) -> None:
    body = lab.client.put("/admin/world", json={"email": {"failure_rate": 0.25}}).json

    assert body["email"]["failure_rate"] == 0.25
    assert body["email"]["latency_ms"] == 1.0  # kept from the fast test world
    assert lab.client.get("/admin/world").json == body


def test_a_flip_reaches_another_process_within_a_second(
    lab: Lab, service_process: ServiceProcess
) -> None:
    def statements_there() -> str:
        return httpx.get(f"{service_process.url}/api/leads?limit=5").headers["Server-Timing"]

    assert 'desc="16 statements"' in statements_there()

    lab.client.put("/admin/toggles", json={"eager_loading": True})
    flipped_at = time.monotonic()
    seen = eventually(lambda: 'desc="1 statements"' in statements_there(), timeout_s=3)

    assert seen
    assert time.monotonic() - flipped_at < 1.0
