"""Property-based fuzzing of the whole API from its ``/openapi.json`` (schemathesis).

Every operation gets valid and invalid requests (wrong types, out-of-range numbers, unknown
fields, odd unicode, missing bodies). Whatever comes in: no 5xx, and every error is JSON with a
message. ``PUT /admin/world`` is left out: a valid world may legitimately make every later
request slow (a 1 s database round trip); its bad values are tested in test_bad_input.

The default run is short (CI); ``pytest -m slow tests/reliability/test_fuzz_api.py`` runs the
long one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import World
from latency_lab.lab.redis_server import RedisServer
from latency_lab.service.openapi import openapi_document
from tests.lab_fixtures import FAST_WORLD, Lab, ThirdParty, make_lab
from tests.postgres import PostgresServer

SHORT = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


# The document the service serves at /openapi.json (built from the same pydantic models that
# validate requests). Each test sends its cases to its own app: ``call_and_validate(app=...)``.
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(name="PUT /admin/world")


def errors_say_what_is_wrong(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer is a JSON object whose ``error`` is a non-empty message."""
    if response.status_code < 400:
        return None
    headers = {name.lower(): value for name, value in response.headers.items()}
    content_type = headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), (
        f"{case.operation.label} answered {response.status_code} with {content_type!r}"
    )
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (
        f"{case.operation.label} answered {response.status_code} without a message: {body!r}"
    )
    return None


CHECKS = [not_a_server_error, errors_say_what_is_wrong]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fuzz_lab(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
    redis_server: RedisServer,
    thirdparty_process: ThirdParty,
) -> Iterator[Lab]:
    """One lab for every operation of a run (on SQLite, then PostgreSQL): whatever state the
    fuzzing leaves behind (toggles switched, leads created) is state the next case must survive.
    Its own Redis; the providers' world (the session's Redis) made fast."""
    workdir = tmp_path_factory.mktemp("fuzz")
    own_redis = RedisServer(workdir=workdir / "redis").start()
    for url in (own_redis.url, redis_server.url):
        state = SharedState(redis.Redis.from_url(url))
        state.set_world(World.from_json(FAST_WORLD))
        state.close()
    postgres: PostgresServer | None = None
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres_server")
        template = request.getfixturevalue("postgres_template")
        name = postgres.create_database("fuzz", template=template)
        database_url = postgres.url(name)
    else:
        shutil.copy(sqlite_template, workdir / "lab.db")
        database_url = f"sqlite:///{workdir / 'lab.db'}"
    lab = make_lab(database_url, own_redis.url, thirdparty_process.url, workdir)
    try:
        yield lab
    finally:
        lab.close()
        own_redis.stop()
        if postgres is not None:
            postgres.drop_database(name)


@schema.parametrize()
@SHORT
def test_no_input_makes_the_api_fail(case: Any, fuzz_lab: Lab) -> None:
    case.call_and_validate(app=fuzz_lab.app, checks=CHECKS)


@pytest.mark.slow
@schema.parametrize()
@LONG
def test_no_input_makes_the_api_fail_long_run(case: Any, fuzz_lab: Lab) -> None:
    case.call_and_validate(app=fuzz_lab.app, checks=CHECKS)
