"""A worker process killed mid-job (SIGKILL, as the OOM killer would): its jobs run again, and the
provider sees each side effect delivered once in effect (the second call carries the same
idempotency key: a duplicate). A worker runs several jobs at once, on threads: all of them are
taken over."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab_fixtures import Lab, eventually, make_lab
from tests.reliability.conftest import Stack, collect_calls
from tests.reliability.test_redis_outage import delivered_once_each

SLOW = {"latency_ms": 1500.0, "jitter_ms": 0.0}


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Lab]:
    lab = make_lab(stack.database_url, stack.redis_url, stack.thirdparty.url, tmp_path)
    yield lab
    lab.close()


def create_offloaded(service: Lab, n: int = 0) -> int:
    response = service.client.post(
        "/api/leads",
        json={"company": f"Kramerica {n}", "contact_name": "Cosmo Kramer",
              "email": f"cosmo{n}@kramerica.example", "owner_id": 3},
        headers={"X-Lab-Toggles": "async_offload=on"},
    )  # fmt: skip
    assert response.status_code == 201
    assert {s["state"] for s in response.json["side_effects"].values()} == {"queued"}
    return int(response.json["id"])


def wait_for_running_jobs(stack: Stack, count: int, name: str = "worker") -> list[str]:
    jobs = eventually(lambda: len(stack.running_jobs(name)) >= count, timeout_s=15)
    assert jobs, f"{stack.running_jobs(name)} running:\n{stack.log(name)}"
    time.sleep(0.5)  # the jobs have read their leads and their calls are with the provider
    return stack.running_jobs(name)


def email_counts(calls: dict[str, Any]) -> dict[str, int]:
    return dict(calls["counts"]["email"])


def test_a_killed_worker_s_job_is_taken_over_as_abandoned(stack: Stack, service: Lab) -> None:
    stack.set_world(email=SLOW, analytics=SLOW, enrichment=SLOW)
    stack.start_worker("worker-a")
    lead_id = create_offloaded(service)
    wait_for_running_jobs(stack, 3, "worker-a")  # the lead's three effects at once

    stack.kill_worker("worker-a")  # mid-job: every job it runs dies with it
    started = time.monotonic()
    stack.start_worker("worker-b")

    done = eventually(lambda: stack.outbox_counts()["delivered"] == 3, timeout_s=60)
    assert done, f"outbox {stack.outbox_counts()}\n{stack.log('worker-b')}"
    took = time.monotonic() - started
    calls = collect_calls(stack.thirdparty)
    assert delivered_once_each(calls, {lead_id})
    assert email_counts(calls)["duplicates"] == 1
    assert stack.failed_jobs() == []
    assert took < 40, f"the abandoned jobs took {took:.0f} s to run again"


def test_every_job_of_a_killed_worker_runs_again_once(stack: Stack, service: Lab) -> None:
    stack.set_world(email=SLOW, analytics=SLOW, enrichment=SLOW)
    stack.start_worker("worker-a")
    leads = {create_offloaded(service, n) for n in range(4)}
    running = wait_for_running_jobs(stack, 12, "worker-a")  # 4 leads x 3 effects, all at once

    stack.kill_worker("worker-a")
    stack.start_worker("worker-b")

    done = eventually(lambda: stack.outbox_counts()["delivered"] == 12, timeout_s=60)
    assert done, f"outbox {stack.outbox_counts()}\n{stack.log('worker-b')}"
    calls = collect_calls(stack.thirdparty)
    assert len(running) == 12
    assert delivered_once_each(calls, leads)
    assert email_counts(calls)["duplicates"] == 4  # each interrupted email, answered again
    assert stack.failed_jobs() == []
