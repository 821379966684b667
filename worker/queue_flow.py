"""The side-effects queue's flow: arrivals, completions, the backlog and the wait it means.

Read from RQ's own records of the jobs (:func:`read_flow`): a job *arrived* in a window when its
``enqueued_at`` falls in it (wherever it is now: queued, running, finished, failed, waiting for a
retry), and *completed* when its ``ended_at`` does and it left the queue for good (finished, or
failed with no retry left). Nothing is counted twice or sampled: the dashboard's Background jobs
and Live pages and the bench (``benchmarks/queue_drain.py``) read the same numbers.

:func:`assess` is the pure part: with Little's law (L = λW), a job arriving now waits
W = L / μ behind the L jobs queued ahead of it, μ being the completion rate; and since a job
occupies a slot for its run time S, keeping up takes λ·S slots at once. When arrivals outrun
completions it says so, and what to change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import redis
from rq import Queue, Worker
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.utils import utcparse

from latency_lab.service.offload import QUEUE_NAME

WINDOW_S = 30.0
PROCESS_CEILING_PER_S = 110.0  # jobs/s one worker process completes at most on 2 cores (measured)
CONCURRENCY_SETTING = "LAB_RQ_CONCURRENCY"
PROCESSES_SETTING = "LAB_RQ_WORKERS"
_CHUNK = 500  # job ids read at a time from the queue's tail
_SCORE_SLACK_S = 2  # registries score by whole seconds


class Verdict(StrEnum):
    IDLE = "idle"  # nothing arrived, nothing waits
    KEEPING_UP = "keeping up"
    DRAINING = "draining"  # a backlog, shrinking
    FALLING_BEHIND = "falling behind"  # arrivals outrun completions


@dataclass(frozen=True)
class QueueFlow:
    """One window of the queue's life, and where it stands at the window's end."""

    window_s: float
    arrivals: int  # jobs enqueued in the window
    completions: int  # jobs that left for good in the window (finished or failed)
    queued: int  # waiting at the end of the window
    running: int
    slots: int  # RQ workers (each worker process runs LAB_RQ_CONCURRENCY)
    mean_run_s: float | None = None  # of the jobs completed in the window
    processes: int = 1  # worker processes the slots belong to

    @property
    def arrival_rate(self) -> float:
        return self.arrivals / self.window_s if self.window_s > 0 else 0.0

    @property
    def completion_rate(self) -> float:
        return self.completions / self.window_s if self.window_s > 0 else 0.0

    @property
    def expected_wait_s(self) -> float:
        """Little's law: the queue ahead of a job arriving now, over the throughput."""
        if self.queued == 0:
            return 0.0
        return self.queued / self.completion_rate if self.completion_rate > 0 else math.inf

    @property
    def slots_needed(self) -> int | None:
        """Jobs in service at once to keep up: arrival rate times run time (Little's law)."""
        if self.mean_run_s is None or self.arrivals == 0:
            return None
        return math.ceil(self.arrival_rate * self.mean_run_s)


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    summary: str
    advice: str = ""


def assess(flow: QueueFlow) -> Assessment:
    """What the numbers mean, and what to do when the queue falls behind."""
    rates = f"{flow.arrival_rate:.1f} jobs/s arrive, {flow.completion_rate:.1f}/s complete"
    if flow.arrivals == 0 and flow.queued == 0 and flow.running == 0:
        return Assessment(Verdict.IDLE, f"No jobs in the last {flow.window_s:.0f} s.")
    behind = flow.queued > 0 and flow.arrivals > flow.completions
    if not behind:
        if flow.queued == 0:
            return Assessment(Verdict.KEEPING_UP, f"Keeping up: {rates}; nothing waits.")
        return Assessment(
            Verdict.DRAINING,
            f"Draining: {rates}; {flow.queued:,} queued, a new job waits "
            f"{_duration(flow.expected_wait_s)}.",
        )
    summary = (
        f"Arrivals outrun completions: {rates}; the backlog grows by "
        f"{flow.arrival_rate - flow.completion_rate:.1f}/s and a new job waits "
        f"{_duration(flow.expected_wait_s)} ({flow.queued:,} queued)."
    )
    return Assessment(Verdict.FALLING_BEHIND, summary, _advice(flow))


def _advice(flow: QueueFlow) -> str:
    if flow.slots == 0:
        return (
            "No RQ worker is running: `latency-lab up` starts them "
            f"({PROCESSES_SETTING}); `python -m latency_lab.worker.process` starts one."
        )
    run = f"{flow.mean_run_s * 1000:.0f} ms" if flow.mean_run_s is not None else "their run time"
    per_process = flow.completion_rate / max(flow.processes, 1)
    if per_process >= 0.8 * PROCESS_CEILING_PER_S:
        return (
            f"Each worker process completes {per_process:.0f} jobs/s, near what one process's "
            f"CPU allows (~{PROCESS_CEILING_PER_S:.0f}/s): add a process ({PROCESSES_SETTING}), "
            "or lighten the load."
        )
    needed = flow.slots_needed
    if needed is not None and needed > flow.slots:
        return (
            f"The jobs wait on their provider ({run} each): keeping up with "
            f"{flow.arrival_rate:.0f}/s takes {needed} jobs at once (arrivals x run time), the "
            f"workers run {flow.slots}. Raise {CONCURRENCY_SETTING} (jobs per worker process), "
            "or make the provider faster on the Simulated world page."
        )
    return (
        f"{flow.slots} slots could keep up with jobs of {run}: look for what slows the workers "
        f"(the machine's CPU, the database), or add a process ({PROCESSES_SETTING})."
    )


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "until a worker takes it (none completes jobs)"
    return f"~{seconds:.1f} s" if seconds < 120 else f"~{seconds / 60:.0f} min"


# --- reading RQ's records ---------------------------------------------------------------------
def read_flow(
    connection: redis.Redis,
    *,
    since: float | None = None,
    until: float | None = None,
    queue_name: str = QUEUE_NAME,
) -> QueueFlow:
    """The queue's flow between ``since`` and ``until`` (Unix seconds; default: the last
    :data:`WINDOW_S` seconds), and where it stands now."""
    until = time.time() if until is None else until
    since = until - WINDOW_S if since is None else since
    queue = Queue(queue_name, connection=connection)
    candidates = [
        *_queued_since(connection, queue, since),
        *queue.started_job_registry.get_job_ids(),
        *queue.scheduled_job_registry.get_job_ids(),
    ]
    left = _ended_since(connection, queue.finished_job_registry.key, since, DEFAULT_RESULT_TTL)
    left += _ended_since(connection, queue.failed_job_registry.key, since, DEFAULT_FAILURE_TTL)
    times = _job_times(connection, [*candidates, *left])
    workers = _worker_processes(connection, queue)
    arrivals = sum(1 for enqueued, _, _ in times.values() if _within(enqueued, since, until))
    completed = [times[i] for i in set(left) if i in times and _within(times[i][2], since, until)]
    runs = [end - start for _, start, end in completed if start is not None and end is not None]
    return QueueFlow(
        window_s=max(until - since, 1e-9),
        arrivals=arrivals,
        completions=len(completed),
        queued=queue.count,
        running=queue.started_job_registry.count,
        slots=len(workers),
        mean_run_s=sum(runs) / len(runs) if runs else None,
        processes=len(set(workers)),
    )


def _worker_processes(connection: redis.Redis, queue: Queue) -> list[tuple[str, str]]:
    """(hostname, pid) of each RQ worker on the queue: one per slot."""
    keys = Worker.all_keys(connection=connection, queue=queue)
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "hostname", "pid")
        rows = pipe.execute()
    return [(_text(host), _text(pid)) for host, pid in rows if pid is not None]


def _queued_since(connection: redis.Redis, queue: Queue, since: float) -> list[str]:
    """Queued job ids enqueued since ``since``: read from the tail (the newest) until older."""
    found: list[str] = []
    end = -1
    while True:
        chunk = [_text(i) for i in connection.lrange(queue.key, end - _CHUNK + 1, end)]
        if not chunk:
            return found
        found += chunk
        oldest = _job_times(connection, chunk[:1]).get(chunk[0])
        if len(chunk) < _CHUNK or (oldest and oldest[0] is not None and oldest[0] < since):
            return found
        end -= _CHUNK


def _ended_since(connection: redis.Redis, key: str, since: float, ttl: int) -> list[str]:
    """A registry scores a job by its end plus its TTL: the jobs that may have ended since."""
    low = since + ttl - _SCORE_SLACK_S
    return [_text(i) for i in connection.zrangebyscore(key, low, "+inf")]


def _job_times(
    connection: redis.Redis, job_ids: Iterable[str]
) -> dict[str, tuple[float | None, float | None, float | None]]:
    """Each job's (enqueued, started, ended) as Unix seconds, in one round trip."""
    ids = list(dict.fromkeys(job_ids))
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "enqueued_at", "started_at", "ended_at")
        rows: Sequence[Sequence[bytes | None]] = pipe.execute()
    times = {}
    for job_id, row in zip(ids, rows, strict=True):
        if any(row):
            enqueued, started, ended = (_seconds(value) for value in row)
            times[job_id] = (enqueued, started, ended)
    return times


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(value: bytes | None) -> float | None:
    return utcparse(value.decode()).timestamp() if value else None


def _within(moment: float | None, since: float, until: float) -> bool:
    return moment is not None and since <= moment <= until
