"""The one admin client: typed answers, the token sent, and failures that say what to do.

The admin API is stood in for by ``httpx.MockTransport`` answering with the lab's shapes (the
error bodies of :mod:`latency_lab.core.errors`); the CLI's tests drive the same client over real
HTTP, and the end-to-end test of ``up`` against the real service.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import ValidationError

from latency_lab.core.admin_client import AdminClient, AdminError, AdminProblem
from latency_lab.core.errors import field_errors
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import Toggles
from latency_lab.core.world import World
from latency_lab.lab.redis_server import free_port

BASE = "http://lab.test:8001"
Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, *, token: str | None = None) -> AdminClient:
    return AdminClient(BASE, token=token, transport=httpx.MockTransport(handler))


def failure(handler: Handler) -> AdminError:
    with pytest.raises(AdminError) as caught:
        client_for(handler).toggles()
    return caught.value


def answering(status: int, body: object) -> Handler:
    return lambda request: httpx.Response(status, json=body)


# --- typed calls ---------------------------------------------------------------------------------
def test_set_toggles_sends_only_the_changes_with_the_token_and_returns_every_toggle() -> None:
    seen: list[httpx.Request] = []

    def admin_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        toggles = Toggles.from_json(json.loads(request.content), base=Toggles())
        return httpx.Response(200, json={"toggles": toggles.model_dump(), "label": "x"})

    toggles = client_for(admin_api, token="s3cret").set_toggles({"eager_loading": True})

    assert toggles == Toggles(eager_loading=True)
    assert (seen[0].method, seen[0].url.path) == ("PUT", "/admin/toggles")
    assert json.loads(seen[0].content) == {"eager_loading": True}
    assert seen[0].headers["X-Lab-Admin-Token"] == "s3cret"


def test_without_a_token_no_token_header_is_sent() -> None:
    seen: list[httpx.Request] = []

    def admin_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"toggles": Toggles().model_dump()})

    assert client_for(admin_api).toggles() == Toggles()
    assert "X-Lab-Admin-Token" not in seen[0].headers
    assert seen[0].method == "GET" and not seen[0].content


def test_world_changes_are_nested_and_the_answer_typed() -> None:
    def admin_api(request: httpx.Request) -> httpx.Response:
        world = World.from_json(json.loads(request.content), base=World.model_validate({}))
        return httpx.Response(200, json=world.model_dump())

    world = client_for(admin_api).set_world({"analytics": {"latency_ms": 50}})

    assert world.analytics.latency_ms == 50.0
    assert world.email == World.model_validate({}).email  # the rest is the lab's, unchanged


def test_from_settings_uses_the_service_url_and_token_unless_given_a_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("LAB_SERVICE_URL", "LAB_HOST", "LAB_SERVICE_PORT", "LAB_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(LAB_SERVICE_URL="http://service.test:9001/", LAB_ADMIN_TOKEN="t")
    seen: list[httpx.Request] = []

    def admin_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"toggles": Toggles().model_dump()})

    AdminClient.from_settings(settings, transport=httpx.MockTransport(admin_api)).toggles()
    given = AdminClient.from_settings(settings, base_url="http://127.0.0.1:8001")

    assert str(seen[0].url) == "http://service.test:9001/admin/toggles"
    assert seen[0].headers["X-Lab-Admin-Token"] == "t"
    assert given.base_url == "http://127.0.0.1:8001"
    assert AdminClient.from_settings(Settings()).base_url == "http://127.0.0.1:8001"


# --- failures ------------------------------------------------------------------------------------
def test_an_unreachable_lab_says_where_and_how_to_start_one() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(AdminError) as caught:
        AdminClient(url, url_hint="--url").world()

    error = caught.value
    assert error.problem is AdminProblem.UNREACHABLE and error.status is None
    assert str(error) == (
        f"no lab answers at {url} (ConnectError): start one with `latency-lab up`, "
        "or point --url at a running lab"
    )


def test_a_refused_token_names_the_status_and_the_variable_to_set() -> None:
    words = "the admin API needs the admin token (Authorization: Bearer <LAB_ADMIN_TOKEN>)"

    error = failure(answering(401, {"error": words, "status": 401}))

    assert error.problem is AdminProblem.REFUSED and error.status == 401
    assert str(error) == (
        f"the lab at {BASE} refused the admin request (401): {words}: "
        "set LAB_ADMIN_TOKEN to the lab's admin token"
    )
    assert error.reason == words


def test_a_loopback_only_lab_refusing_is_the_same_problem() -> None:
    error = failure(answering(403, {"error": "the admin API only answers loopback callers"}))

    assert error.problem is AdminProblem.REFUSED and error.status == 403
    assert "refused the admin request (403): the admin API only answers loopback" in str(error)


def test_a_refused_value_names_the_field() -> None:
    words = "analytics.failure_rate: Input should be less than or equal to 1"

    error = failure(answering(400, {"error": words, "status": 400}))

    assert error.problem is AdminProblem.INVALID and error.status == 400
    assert (
        str(error) == f"the lab refused the change (400): {words}: correct that value and try again"
    )


def test_a_validation_failure_names_each_field() -> None:
    with pytest.raises(ValidationError) as invalid:
        World.model_validate({"db_round_trip_ms": -1})
    body = {"error": "validation failed", "status": 422, "fields": field_errors(invalid.value)}

    error = failure(answering(422, body))

    assert error.problem is AdminProblem.INVALID
    assert error.reason is not None and error.reason.startswith("db_round_trip_ms: Input should")
    assert "db_round_trip_ms" in str(error)


def test_a_failing_lab_points_at_its_log() -> None:
    body = {"error": "the service failed unexpectedly (RuntimeError)", "status": 500}

    error = failure(answering(500, body))

    assert error.problem is AdminProblem.FAILED and error.status == 500
    assert f"GET {BASE}/admin/toggles failed (500): the service failed unexpectedly" in str(error)
    assert "LAB_VAR_DIR/log/service.log" in str(error)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>not the lab</html>"),
        httpx.Response(200, json={"status": "ok"}),
    ],
)
def test_something_that_is_not_the_lab_is_said_so(answer: httpx.Response) -> None:
    error = failure(lambda request: answer)

    assert error.problem is AdminProblem.FAILED
    assert f"{BASE}/admin/toggles did not answer as the lab's admin API does" in str(error)
    assert "point LAB_SERVICE_URL at the lab's service" in str(error)
