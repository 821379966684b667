"""The queue's flow: rates, backlog and Little's law from RQ's records, and what they mean."""

from __future__ import annotations

import math
import time

import pytest
import redis
from rq import Queue, SimpleWorker

from latency_lab.service.offload import QUEUE_NAME
from latency_lab.worker.queue_flow import QueueFlow, Verdict, assess, read_flow


def delivered(provider: str) -> str:
    return provider


def refused(provider: str) -> str:
    raise ValueError(f"{provider} answered 503")


def flow(**values: float | int | None) -> QueueFlow:
    base: dict = dict(window_s=10.0, arrivals=0, completions=0, queued=0, running=0, slots=16)
    return QueueFlow(**(base | values))


# --- the pure part --------------------------------------------------------------------------------
def test_littles_law_gives_the_wait_and_the_slots_needed() -> None:
    behind = flow(arrivals=200, completions=100, queued=50, running=16, mean_run_s=0.5)

    assert behind.arrival_rate == 20.0
    assert behind.completion_rate == 10.0
    assert behind.expected_wait_s == 5.0  # 50 queued / 10 per second
    assert behind.slots_needed == 10  # 20/s x 0.5 s


def test_arrivals_outrunning_slow_jobs_ask_for_more_concurrency() -> None:
    slow = flow(arrivals=600, completions=160, queued=440, running=16, mean_run_s=1.0)

    verdict = assess(slow)

    assert verdict.verdict is Verdict.FALLING_BEHIND
    assert verdict.summary.startswith("Arrivals outrun completions: 60.0 jobs/s arrive")
    assert "grows by 44.0/s" in verdict.summary and "~27.5 s" in verdict.summary
    assert "takes 60 jobs at once" in verdict.advice and "the workers run 16" in verdict.advice
    assert "LAB_RQ_CONCURRENCY" in verdict.advice


def test_arrivals_outrunning_enough_slots_blame_the_cpu() -> None:
    busy = flow(arrivals=1500, completions=1050, queued=450, mean_run_s=0.14)

    verdict = assess(busy)

    assert verdict.verdict is Verdict.FALLING_BEHIND
    assert verdict.advice.startswith("Each worker process completes 105 jobs/s")
    assert "add a process (LAB_RQ_WORKERS)" in verdict.advice


def test_no_worker_means_an_endless_wait() -> None:
    stuck = flow(arrivals=5, queued=5, slots=0)

    verdict = assess(stuck)

    assert math.isinf(stuck.expected_wait_s)
    assert verdict.verdict is Verdict.FALLING_BEHIND
    assert "until a worker takes it" in verdict.summary
    assert "No RQ worker is running" in verdict.advice


@pytest.mark.parametrize(
    ("values", "verdict"),
    [
        ({}, Verdict.IDLE),
        ({"arrivals": 100, "completions": 100, "mean_run_s": 0.1}, Verdict.KEEPING_UP),
        ({"arrivals": 50, "completions": 100, "queued": 30}, Verdict.DRAINING),
    ],
)
def test_each_verdict(values: dict, verdict: Verdict) -> None:
    assert assess(flow(**values)).verdict is verdict
    assert assess(flow(**values)).advice == ""


# --- read from RQ's records -----------------------------------------------------------------------
def test_flow_counts_the_jobs_that_arrived_and_completed(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(QUEUE_NAME, connection=connection)
    before = time.time()
    for provider in ("email", "analytics", "enrichment"):
        queue.enqueue(delivered, provider)
    queue.enqueue(refused, "enrichment")
    SimpleWorker([queue], connection=connection).work(burst=True)
    for provider in ("email", "analytics"):  # still waiting: no worker runs now
        queue.enqueue(delivered, provider)

    now = read_flow(connection, since=before - 1)
    earlier = read_flow(connection, since=before - 60, until=before - 1)

    assert (now.arrivals, now.completions, now.queued, now.running) == (6, 4, 2, 0)
    assert now.slots == 0  # the burst worker is gone
    assert now.mean_run_s is not None and now.mean_run_s < 1
    assert (earlier.arrivals, earlier.completions) == (0, 0)
    assert assess(now).verdict is Verdict.FALLING_BEHIND
