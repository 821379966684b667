"""Providers that fail or hang. Inline: bounded by the timeout, answered with a documented
degradation. Offloaded: retried with backoff, then visible in the failed-job registry."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from latency_lab.cli.main import cli
from tests.lab_fixtures import Lab, eventually, make_lab
from tests.reliability.conftest import Stack, collect_calls
from tests.reliability.test_redis_outage import delivered_once_each

LEAD = {"company": "Pendant Publishing", "contact_name": "Elaine Benes",
        "email": "elaine@pendant.example", "owner_id": 5}  # fmt: skip
INLINE = {"X-Lab-Toggles": "async_offload=off"}
OFFLOADED = {"X-Lab-Toggles": "async_offload=on"}
DOWN = {"failure_rate": 1.0}
UP = {"failure_rate": 0.0}


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Lab]:
    lab = make_lab(stack.database_url, stack.redis_url, stack.thirdparty.url, tmp_path)
    yield lab
    lab.close()


def states(response: object) -> dict[str, str]:
    effects = response.json["side_effects"]  # type: ignore[attr-defined]
    return {task: effect["state"] for task, effect in effects.items()}


def test_inline_failures_degrade_as_documented_and_are_retried_later(
    stack: Stack, service: Lab
) -> None:
    stack.set_world(email=DOWN, analytics=DOWN)
    created = service.client.post("/api/leads", json=LEAD, headers=INLINE)
    read = service.get("/api/leads/3", toggles="async_offload=off")

    assert created.status_code == 201 and read.status_code == 200
    assert states(created) == {
        "send_owner_email": "pending",  # kept in the outbox: a worker retries it
        "track_event": "failed",  # analytics is best-effort: dropped, and said so
        "enrich_lead": "delivered",
    }
    effects = created.json["side_effects"]
    assert "HTTP 503" in effects["send_owner_email"]["detail"]
    assert "a worker retries it" in effects["send_owner_email"]["detail"]
    assert "best-effort" in effects["track_event"]["detail"]
    assert stack.outbox_counts() | {} == {
        "pending": 1, "dispatched": 0, "delivered": 1, "failed": 0, "dropped": 1,
    }  # fmt: skip

    stack.set_world(email=UP, analytics=UP)
    stack.start_worker()
    stack.start_relay()
    assert eventually(lambda: stack.outbox_counts()["pending"] == 0, timeout_s=30)
    assert eventually(lambda: stack.outbox_counts()["delivered"] == 2, timeout_s=30)
    assert deliveries(collect_calls(stack.thirdparty), "email", created.json["id"]) == 1


def test_a_hanging_provider_costs_an_inline_request_one_timeout(stack: Stack, service: Lab) -> None:
    hang = {"latency_ms": 3000.0, "jitter_ms": 0.0}
    stack.set_world(third_party_timeout_s=0.5, email=hang, analytics=hang)
    started = time.perf_counter()
    created = service.client.post("/api/leads", json=LEAD, headers=INLINE)
    create_s = time.perf_counter() - started
    started = time.perf_counter()
    read = service.get("/api/leads/3", toggles="async_offload=off")
    read_s = time.perf_counter() - started

    assert created.status_code == 201 and read.status_code == 200
    assert states(created)["send_owner_email"] == "pending"
    assert "ReadTimeout" in created.json["side_effects"]["send_owner_email"]["detail"]
    assert create_s < 2.0, f"create with two hanging providers took {create_s:.2f} s"
    assert read_s < 1.0, f"read with a hanging analytics provider took {read_s:.2f} s"
    # The provider finishes what it was given (the client gave up, not the server): let it, so
    # that no late delivery lands in the next test's count.
    assert eventually(lambda: collect_calls(stack.thirdparty)["counts"]["analytics"]["received"]
                      >= 2, timeout_s=10)  # fmt: skip


def test_offloaded_failures_retry_with_backoff_then_land_in_the_failed_registry(
    stack: Stack, service: Lab
) -> None:
    stack.set_world(enrichment=DOWN)
    stack.start_worker()
    stack.start_relay()
    started = time.monotonic()
    created = service.client.post("/api/leads", json=LEAD, headers=OFFLOADED)
    lead_id = created.json["id"]

    failed = eventually(lambda: stack.failed_jobs(), timeout_s=40, interval_s=0.2)
    took = time.monotonic() - started
    assert failed == [f"enrich_lead-{_event_id(stack, 'enrich_lead')}"], stack.log("worker")
    calls = collect_calls(stack.thirdparty)
    assert calls["counts"]["enrichment"]["failed"] == 4  # the first try and three retries
    tries = sorted(c["received_at"] for c in calls["calls"] if c["provider"] == "enrichment")
    waits = [later - earlier for earlier, later in itertools.pairwise(tries)]
    # The retries waited 1, 2 and 5 s: RQ schedules a retry in whole seconds (its scheduled-job
    # registry scores by the second), so each may start up to a second early, never sooner.
    assert len(waits) == 3 and all(w >= d - 1 for w, d in zip(waits, (1, 2, 5), strict=True)), waits
    assert took >= sum(waits)
    assert eventually(lambda: stack.outbox_counts()["failed"] == 1, timeout_s=15)
    assert stack.outbox_counts()["delivered"] == 2  # email and analytics went through
    assert deliveries(collect_calls(stack.thirdparty), "email", lead_id) == 1
    assert service.get(f"/api/leads/{lead_id}").json["industry"] is None
    shown = CliRunner().invoke(cli, ["outbox", "--failed", "--database-url", stack.database_url])
    assert shown.exit_code == 0, shown.output
    assert "failed      1" in shown.output and "enrich_lead: RQ gave up" in shown.output


def deliveries(calls: dict[str, Any], provider: str, lead_id: int) -> int:
    return sum(
        1 for call in calls["calls"]
        if call["provider"] == provider and call["outcome"] == "delivered"
        and call["body"].get("lead_id") == lead_id
    )  # fmt: skip


def _event_id(stack: Stack, task: str) -> str:
    from sqlalchemy import select

    from latency_lab.service.db import build_engine, session_factory
    from latency_lab.service.models import OutboxEvent

    engine = build_engine(stack.database_url)
    try:
        with session_factory(engine)() as session:
            return str(session.scalar(select(OutboxEvent.event_id).where(OutboxEvent.task == task)))
    finally:
        engine.dispose()


def test_delivery_stays_exactly_once_when_a_third_of_calls_fail(stack: Stack, service: Lab) -> None:
    flaky = {"failure_rate": 0.34}
    stack.set_world(email=flaky, analytics=flaky, enrichment=flaky)
    stack.start_worker()
    stack.start_relay()
    lead_ids = set()
    for n in range(6):
        response = service.client.post(
            "/api/leads", json={**LEAD, "email": f"e{n}@pendant.example"}, headers=OFFLOADED
        )
        lead_ids.add(response.json["id"])

    settled = eventually(
        lambda: stack.outbox_counts()["delivered"] + stack.outbox_counts()["failed"] == 18,
        timeout_s=60,
    )
    assert settled, stack.outbox_counts()
    calls = collect_calls(stack.thirdparty)
    failed_rows = stack.outbox_counts()["failed"]
    # Four tries at 34% each: a row fails for good about once in a hundred.
    assert failed_rows <= 1
    if failed_rows == 0:
        assert delivered_once_each(calls, lead_ids)
    assert all(c["duplicates"] == 0 for c in calls["counts"].values())
