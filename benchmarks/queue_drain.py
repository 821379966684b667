"""Does the side-effects queue keep up? Arrival and completion rates over a load, and how long
the queue takes to drain once the load ends.

For the bench, around any load that enqueues jobs::

    drain = measure_queue_drain(redis_url, run_load)   # run_load() drives the requests
    print(drain.arrival_rate, drain.completion_rate, drain.drain_s)

or, when the load is timed elsewhere, :func:`drain_after` with its start and end (Unix seconds).
Against a running lab, with arrivals of its own (reads' analytics events, as the service enqueues
them)::

    python -m latency_lab.benchmarks.queue_drain --redis-url REDIS_URL --jobs 600 --rate 100

The rates are read from RQ's records of the jobs themselves
(:func:`latency_lab.worker.queue_flow.read_flow`, what the dashboard shows); the drain is
watched: how long after the load's end nothing is queued or running any more.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue

from latency_lab.service.offload import QUEUE_NAME
from latency_lab.worker.queue_flow import read_flow

DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.05
DRAIN_GOAL_S = 2.0  # issue 15: the queue drains within 2 s of the load's end


@dataclass(frozen=True)
class QueueDrain:
    """The queue over one load: what arrived, what completed, and the drain after it."""

    load_s: float
    arrivals: int  # jobs enqueued during the load
    completions: int  # jobs that left the queue for good during the load
    backlog_at_end: int  # queued or running when the load ended
    drain_s: float | None  # from the load's end until nothing is queued or running; None: not
    # within the timeout
    drained_jobs: int  # completed between the load's end and the drain (or the timeout)

    @property
    def arrival_rate(self) -> float:
        return self.arrivals / self.load_s if self.load_s > 0 else 0.0

    @property
    def completion_rate(self) -> float:
        """Completions per second while the load ran."""
        return self.completions / self.load_s if self.load_s > 0 else 0.0

    @property
    def drain_rate(self) -> float | None:
        """Completions per second after the load, while the backlog drained."""
        if not self.drain_s:
            return None
        return self.drained_jobs / self.drain_s

    @property
    def within_goal(self) -> bool:
        return self.drain_s is not None and self.drain_s <= DRAIN_GOAL_S


def measure_queue_drain(
    redis_url: str,
    run_load: Callable[[], Any],
    *,
    queue_name: str = QUEUE_NAME,
    timeout_s: float = DRAIN_TIMEOUT_S,
) -> QueueDrain:
    """Run ``run_load()``, then watch the queue drain."""
    started = time.time()
    run_load()
    return drain_after(redis_url, started, time.time(), queue_name=queue_name, timeout_s=timeout_s)


def drain_after(
    redis_url: str,
    load_started: float,
    load_ended: float,
    *,
    queue_name: str = QUEUE_NAME,
    timeout_s: float = DRAIN_TIMEOUT_S,
) -> QueueDrain:
    """Watch the queue from now until nothing is queued or running (or ``timeout_s``), then
    read what arrived and completed during the load. Call it as soon as the load has ended."""
    with redis.Redis.from_url(redis_url) as connection:
        queue = Queue(queue_name, connection=connection)
        backlog = _in_queue(queue)
        drained_at = _wait_until_empty(queue, load_ended + timeout_s)
        during = read_flow(connection, since=load_started, until=load_ended, queue_name=queue_name)
        after = read_flow(
            connection, since=load_ended, until=drained_at or time.time(), queue_name=queue_name
        )
    return QueueDrain(
        load_s=load_ended - load_started,
        arrivals=during.arrivals,
        completions=during.completions,
        backlog_at_end=backlog,
        drain_s=None if drained_at is None else max(0.0, drained_at - load_ended),
        drained_jobs=after.completions,
    )


def _in_queue(queue: Queue) -> int:
    return int(queue.count) + int(queue.started_job_registry.count)


def _wait_until_empty(queue: Queue, deadline: float) -> float | None:
    while _in_queue(queue) > 0:
        if time.time() > deadline:
            return None
        time.sleep(POLL_S)
    return time.time()


def enqueue_reads(redis_url: str, jobs: int, rate_per_s: float) -> None:
    """``jobs`` reads' analytics events, enqueued as the service does, at ``rate_per_s``."""
    from opentelemetry import trace

    from latency_lab.service import tasks
    from latency_lab.service.offload import enqueue

    with redis.Redis.from_url(redis_url) as connection:
        queue, tracer = Queue(QUEUE_NAME, connection=connection), trace.get_tracer(__name__)
        run = uuid.uuid4().hex[:8]
        started = time.monotonic()
        for n in range(jobs):
            kwargs = {"name": "leads.list", "event_id": f"drain-{run}-{n}"}
            enqueue(tasks.track_event, kwargs, queue=queue, tracer=tracer)
            time.sleep(max(0.0, started + (n + 1) / rate_per_s - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description="Enqueue a burst of jobs, watch the queue drain.")
    parser.add_argument("--redis-url", required=True, help="the lab's Redis (lab.json: urls.redis)")
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0, help="arrivals per second")
    args = parser.parse_args()
    drain = measure_queue_drain(
        args.redis_url, lambda: enqueue_reads(args.redis_url, args.jobs, args.rate)
    )
    drained = "not within the timeout" if drain.drain_s is None else f"in {drain.drain_s:.2f} s"
    print(
        f"{drain.arrivals} jobs arrived at {drain.arrival_rate:.1f}/s, "
        f"{drain.completion_rate:.1f}/s completed meanwhile; {drain.backlog_at_end} left at the "
        f"last arrival, drained {drained} "
        f"(goal: {DRAIN_GOAL_S:.0f} s)"
    )


if __name__ == "__main__":
    main()
