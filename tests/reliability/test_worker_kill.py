"""A worker killed mid-job (SIGKILL): the job runs again, and the provider sees each side effect
delivered once in effect (the second call carries the same idempotency key: a duplicate)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab_fixtures import Lab, eventually, make_lab
from tests.reliability.conftest import Stack, busy_horses, collect_calls
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


def wait_for_a_running_job(stack: Stack, name: str = "worker") -> list[int]:
    horses = eventually(lambda: busy_horses(stack.processes[name].pid), timeout_s=15)
    assert horses, f"no job started:\n{stack.log(name)}"
    time.sleep(0.5)  # the horse has read the lead and its call is with the provider
    return list(horses)


def email_counts(calls: dict[str, Any]) -> dict[str, int]:
    return dict(calls["counts"]["email"])


def test_a_killed_work_horse_is_retried_and_delivered_once(stack: Stack, service: Lab) -> None:
    stack.set_world(email=SLOW, analytics=SLOW, enrichment=SLOW)
    stack.start_worker()
    lead_id = create_offloaded(service)
    wait_for_a_running_job(stack)

    worker = stack.processes["worker"]
    for horse in busy_horses(worker.pid):
        import os
        import signal

        os.kill(horse, signal.SIGKILL)

    done = eventually(lambda: stack.outbox_counts()["delivered"] == 3, timeout_s=30)
    assert done, f"outbox {stack.outbox_counts()}\n{stack.log('worker')}"
    calls = collect_calls(stack.thirdparty)
    assert delivered_once_each(calls, {lead_id})
    assert email_counts(calls)["duplicates"] == 1  # the retry: answered, not delivered again
    assert worker.poll() is None  # the worker itself carried on
    assert stack.failed_jobs() == []


def test_a_killed_worker_s_job_is_taken_over_as_abandoned(stack: Stack, service: Lab) -> None:
    stack.set_world(email=SLOW, analytics=SLOW, enrichment=SLOW)
    stack.start_worker("worker-a")
    lead_id = create_offloaded(service)
    wait_for_a_running_job(stack, "worker-a")

    stack.kill_worker("worker-a")  # the work horse and the worker, mid-job
    started = time.monotonic()
    stack.start_worker("worker-b")

    done = eventually(lambda: stack.outbox_counts()["delivered"] == 3, timeout_s=60)
    assert done, f"outbox {stack.outbox_counts()}\n{stack.log('worker-b')}"
    took = time.monotonic() - started
    calls = collect_calls(stack.thirdparty)
    assert delivered_once_each(calls, {lead_id})
    assert email_counts(calls)["duplicates"] == 1
    assert stack.failed_jobs() == []
    assert took < 40, f"the abandoned job took {took:.0f} s to run again"
