"""The third-party simulator: latency and failures from the shared world, every call recorded,
idempotent deliveries, and clear 400s. In-process against a real Redis, plus one real gunicorn."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from flask.testing import FlaskClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import ProviderWorld, World
from latency_lab.lab.redis_server import RedisServer, free_port
from latency_lab.simulator.app import ThirdPartySimulator, create_thirdparty_app
from latency_lab.telemetry import configure
from tests.lab_fixtures import process_env, start_gunicorn, stop_process, wait_until_up

INSTANT = {"latency_ms": 0.0, "jitter_ms": 0.0, "failure_rate": 0.0}
FAST_WORLD = World.from_json({"email": INSTANT, "analytics": INSTANT, "enrichment": INSTANT})
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# --- in-process fixtures ----------------------------------------------------------------------
@pytest.fixture
def world_state(redis_url: str) -> Iterator[SharedState]:
    state = SharedState(redis.Redis.from_url(redis_url))
    state.set_world(FAST_WORLD)
    yield state
    state.close()


@pytest.fixture
def simulator(world_state: SharedState, redis_url: str, tmp_path: Path) -> FlaskClient:
    telemetry = configure(
        "latency-lab-thirdparty-test",
        role="thirdparty",
        processors=[SimpleSpanProcessor(InMemorySpanExporter())],
    )
    settings = Settings(REDIS_URL=redis_url, LAB_VAR_DIR=tmp_path)
    app = create_thirdparty_app(settings, shared_state=world_state, telemetry=telemetry)
    return app.test_client()


def set_provider(state: SharedState, provider: str, **behaviour: float) -> None:
    state.set_world(World.from_json({provider: INSTANT | behaviour}, base=state.world))


def calls(client: FlaskClient, **query: str) -> dict[str, Any]:
    response = client.get("/calls", query_string=query)
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


# --- latency and failures ---------------------------------------------------------------------
def test_latency_comes_from_the_shared_world(
    simulator: FlaskClient, world_state: SharedState
) -> None:
    set_provider(world_state, "email", latency_ms=120.0)

    started = time.perf_counter()
    slow = simulator.post("/email", json={"to": "ana@example.com"})
    slow_s = time.perf_counter() - started
    started = time.perf_counter()
    fast = simulator.post("/analytics", json={"event": "lead_viewed"})
    fast_s = time.perf_counter() - started

    assert slow.status_code == fast.status_code == 200
    assert 0.12 <= slow_s < 0.6
    assert fast_s < 0.1


def test_jitter_stays_within_its_band(world_state: SharedState) -> None:
    simulator = ThirdPartySimulator(world_state, rng=random.Random(3))
    behaviour = ProviderWorld(latency_ms=50.0, jitter_ms=40.0, failure_rate=0.0)
    delays = [simulator.delay_s(behaviour) for _ in range(500)]
    assert 0.010 <= min(delays) < 0.02
    assert 0.08 < max(delays) <= 0.090
    assert simulator.delay_s(ProviderWorld(latency_ms=5, jitter_ms=50, failure_rate=0)) >= 0


def test_failure_rate_one_answers_503_and_records_the_failure(
    simulator: FlaskClient, world_state: SharedState
) -> None:
    set_provider(world_state, "enrichment", failure_rate=1.0)

    response = simulator.post("/enrichment", json={"company": "Acme"})

    assert response.status_code == 503
    assert response.json == {"error": "enrichment: simulated failure", "provider": "enrichment"}
    counts = calls(simulator)["counts"]["enrichment"]
    assert counts == {"received": 1, "delivered": 0, "duplicates": 0, "failed": 1, "rejected": 0}


# --- the record of calls ----------------------------------------------------------------------
def test_every_call_is_recorded_and_counted(simulator: FlaskClient) -> None:
    simulator.post(
        "/email", json={"to": "a@example.com", "lead_id": 1}, headers={"traceparent": TRACEPARENT}
    )
    simulator.post("/email", json={"to": "b@example.com"})
    simulator.post("/analytics", json={"event": "lead_viewed", "properties": {"id": 3}})
    simulator.post("/email", json={"lead_id": 1})  # no "to": rejected, but received

    everything = calls(simulator)
    assert everything["counts"]["email"] == {
        "received": 3,
        "delivered": 2,
        "duplicates": 0,
        "failed": 0,
        "rejected": 1,
    }
    assert everything["counts"]["analytics"]["delivered"] == 1
    assert everything["counts"]["enrichment"]["received"] == 0
    first = everything["calls"][0]
    assert first["provider"] == "email"
    assert first["body"] == {"to": "a@example.com", "lead_id": 1}
    assert first["traceparent"] == TRACEPARENT
    assert first["outcome"] == "delivered"
    assert first["idempotency_key"] is None

    only_analytics = calls(simulator, provider="analytics")
    assert [c["provider"] for c in only_analytics["calls"]] == ["analytics"]
    cutoff = everything["calls"][1]["received_at"]
    later = calls(simulator, since=str(cutoff))
    assert len(later["calls"]) == 2
    assert calls(simulator, since="2100-01-01T00:00:00")["calls"] == []


def test_delete_calls_resets_the_record(simulator: FlaskClient) -> None:
    simulator.post("/analytics", json={"event": "x"}, headers={"Idempotency-Key": "k1"})
    assert simulator.delete("/calls").status_code == 200
    assert calls(simulator)["calls"] == []
    # The delivered keys are forgotten too: the same key delivers again.
    simulator.post("/analytics", json={"event": "x"}, headers={"Idempotency-Key": "k1"})
    assert calls(simulator)["counts"]["analytics"]["delivered"] == 1


# --- idempotency ------------------------------------------------------------------------------
def test_repeated_idempotency_key_is_delivered_once(simulator: FlaskClient) -> None:
    headers = {"Idempotency-Key": "lead-7-created"}
    first = simulator.post("/email", json={"to": "a@example.com"}, headers=headers)
    again = simulator.post("/email", json={"to": "a@example.com"}, headers=headers)
    other_provider = simulator.post("/analytics", json={"event": "e"}, headers=headers)

    assert first.status_code == again.status_code == other_provider.status_code == 200
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    counts = calls(simulator)["counts"]
    assert counts["email"] == {
        "received": 2,
        "delivered": 1,
        "duplicates": 1,
        "failed": 0,
        "rejected": 0,
    }
    assert counts["analytics"]["delivered"] == 1  # keys are per provider


def test_a_failed_attempt_does_not_use_up_its_key(
    simulator: FlaskClient, world_state: SharedState
) -> None:
    headers = {"Idempotency-Key": "job-42"}
    set_provider(world_state, "email", failure_rate=1.0)
    assert simulator.post("/email", json={"to": "a@x.io"}, headers=headers).status_code == 503
    set_provider(world_state, "email", failure_rate=0.0)
    assert simulator.post("/email", json={"to": "a@x.io"}, headers=headers).status_code == 200
    assert simulator.post("/email", json={"to": "a@x.io"}, headers=headers).status_code == 200

    outcomes = [c["outcome"] for c in calls(simulator)["calls"]]
    assert outcomes == ["failed", "delivered", "duplicate"]


# --- enrichment -------------------------------------------------------------------------------
def test_enrichment_is_plausible_and_deterministic(simulator: FlaskClient) -> None:
    by_company = simulator.post("/enrichment", json={"company": "Globex Corp", "lead_id": 4})
    again = simulator.post("/enrichment", json={"company": "Globex Corp", "lead_id": 4})
    by_email = simulator.post("/enrichment", json={"email": "hank@initech.com"})

    assert by_company.json == again.json
    data = by_company.json
    assert data is not None
    assert data["industry"] and data["company_size"]
    assert data["linkedin"] == "https://www.linkedin.com/company/globex-corp"
    assert by_email.json is not None
    assert by_email.json["company"] == "initech"
    assert by_email.json["domain"] == "initech.com"


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/email", b"{not json", "not valid JSON"),
        ("/email", b"", "body is empty"),
        ("/analytics", b"[1, 2]", "JSON object"),
        ("/email", b'{"subject": "hi"}', "to: Field required"),
        ("/analytics", b'{"event": 3}', "event: Input should be a valid string"),
        ("/enrichment", b'{"lead_id": 1}', "'email' or 'company'"),
    ],
)
def test_bad_input_is_a_400_that_names_the_problem(
    simulator: FlaskClient, path: str, body: bytes, problem: str
) -> None:
    response = simulator.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json is not None
    assert problem in response.json["error"]


def test_bad_queries_and_unknown_routes_answer_json(simulator: FlaskClient) -> None:
    unknown_provider = simulator.get("/calls?provider=fax")
    assert unknown_provider.status_code == 400
    assert "unknown provider 'fax'" in unknown_provider.json["error"]
    assert simulator.get("/calls?since=yesterday").status_code == 400
    missing = simulator.get("/sms")
    assert missing.status_code == 404 and missing.is_json
    wrong_method = simulator.get("/email")
    assert wrong_method.status_code == 405 and wrong_method.is_json


# --- the real entry point ---------------------------------------------------------------------
@pytest.fixture
def thirdparty_gunicorn(redis_server: RedisServer, redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = process_env(REDIS_URL=redis_url, LAB_VAR_DIR=str(tmp_path), LAB_THIRDPARTY_PORT=str(port))
    log_file = tmp_path / "thirdparty.log"
    process = start_gunicorn(
        "latency_lab.simulator.app:create_thirdparty_app()",
        port=port,
        env=env,
        log_file=log_file,
        threads=32,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/healthz", process, log_file)
        yield url
    finally:
        stop_process(process)


def test_gunicorn_entry_point_delivers_concurrent_retries_once(
    thirdparty_gunicorn: str, redis_url: str
) -> None:
    state = SharedState(redis.Redis.from_url(redis_url))
    state.set_world(World.from_json({"email": {"latency_ms": 80.0, "jitter_ms": 0.0}}))
    state.close()
    time.sleep(0.3)  # the simulator's poller refreshes every 0.2 s

    def send(_: int) -> httpx.Response:
        return httpx.post(
            f"{thirdparty_gunicorn}/email",
            json={"to": "ops@example.com"},
            headers={"Idempotency-Key": "retry-storm"},
            timeout=5,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, range(8)))

    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["message_id"] for r in responses}) == 1
    assert min(r.elapsed.total_seconds() for r in responses) >= 0.075
    recorded = httpx.get(f"{thirdparty_gunicorn}/calls?provider=email", timeout=5).json()
    assert recorded["counts"]["email"]["received"] == 8
    assert recorded["counts"]["email"]["delivered"] == 1
    assert recorded["counts"]["email"]["duplicates"] == 7
    bad = httpx.post(f"{thirdparty_gunicorn}/email", content=b"nope", timeout=5)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
