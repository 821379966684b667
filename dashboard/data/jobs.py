"""The side-effects queue as RQ sees it: counts per registry, its flow (arrivals, completions,
the expected wait), the worker processes, recent jobs, failures.

``rq`` is imported only when a page asks (it pulls in a lot). Redis being unreachable becomes a
:class:`~.errors.RedisUnavailable` that says how to start it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import redis
import streamlit as st

from latency_lab.dashboard.data.connections import LIVE_TTL_S, redacted, redis_client, redis_url
from latency_lab.dashboard.data.errors import RedisUnavailable

if TYPE_CHECKING:
    from latency_lab.worker.queue_flow import QueueFlow


@dataclass(frozen=True)
class JobsSnapshot:
    """The side-effects queue as RQ sees it."""

    counts: dict[str, int]
    workers: pd.DataFrame  # one row per worker process (each runs its slots on threads)
    finished: pd.DataFrame
    failures: pd.DataFrame
    flow: QueueFlow


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def jobs_snapshot(recent: int = 200) -> JobsSnapshot:
    """Queue length, registries, workers, recent job durations and failures."""
    from rq import Queue, Worker  # rq pulls in a lot; only the jobs page needs it

    from latency_lab.service.offload import QUEUE_NAME
    from latency_lab.worker.queue_flow import read_flow

    connection = redis_client()
    try:
        queue = Queue(QUEUE_NAME, connection=connection)
        counts = {
            "queued": queue.count,
            "started": queue.started_job_registry.count,
            "finished": queue.finished_job_registry.count,
            "failed": queue.failed_job_registry.count,
            "scheduled": queue.scheduled_job_registry.count,
            "deferred": queue.deferred_job_registry.count,
        }
        workers = _workers_frame(Worker.all(connection=connection))
        finished = _jobs_frame(
            queue.finished_job_registry.get_job_ids(0, recent - 1, desc=True), connection
        )
        failures = _jobs_frame(
            queue.failed_job_registry.get_job_ids(0, recent - 1, desc=True), connection
        )
        flow = read_flow(connection)
    except redis.RedisError as exc:
        raise _redis_down(exc) from None
    return JobsSnapshot(counts, workers, finished, failures, flow)


def _redis_down(exc: Exception) -> RedisUnavailable:
    return RedisUnavailable(
        f"{redacted(redis_url() or '')}: {type(exc).__name__}: {exc}",
        "Is the lab running? `latency-lab up` starts Redis; with REDIS_URL set, start that Redis.",
    )


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def queue_depth() -> int | None:
    """Jobs waiting in the side-effects queue; ``None`` when Redis cannot be asked."""
    from rq import Queue

    from latency_lab.service.offload import QUEUE_NAME

    try:
        return int(Queue(QUEUE_NAME, connection=redis_client()).count)
    except (redis.RedisError, RedisUnavailable):
        return None


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def queue_flow() -> QueueFlow | None:
    """The queue's flow over the last 30 s; ``None`` when Redis cannot be asked."""
    from latency_lab.worker.queue_flow import read_flow

    try:
        return read_flow(redis_client())
    except (redis.RedisError, RedisUnavailable):
        return None


WORKER_COLUMNS = [
    "process",
    "slots",
    "busy",
    "succeeded",
    "failed",
    "busy for (s)",
    "last heartbeat",
]


def _workers_frame(workers: Sequence[Any]) -> pd.DataFrame:
    """One row per worker process: its RQ workers are its slots, one job at a time each."""
    rows: dict[str, dict[str, Any]] = {}
    for worker in workers:
        process = f"{worker.hostname}:{worker.pid}"
        row = rows.setdefault(process, dict.fromkeys(WORKER_COLUMNS, 0) | {"process": process})
        row["slots"] += 1
        row["busy"] += int(str(worker.get_state()) == "busy")
        row["succeeded"] += worker.successful_job_count
        row["failed"] += worker.failed_job_count
        row["busy for (s)"] = round(row["busy for (s)"] + float(worker.total_working_time or 0), 2)
        beat = worker.last_heartbeat
        row["last heartbeat"] = max(beat, row["last heartbeat"] or beat) if beat else None
    return pd.DataFrame(list(rows.values()), columns=WORKER_COLUMNS)


def _jobs_frame(job_ids: Sequence[str], connection: redis.Redis) -> pd.DataFrame:
    from rq.job import Job

    rows = [_job_row(job) for job in Job.fetch_many(list(job_ids), connection=connection) if job]
    columns = ["job", "task", "enqueued", "wait_ms", "run_ms", "ended", "error", "traceback"]
    return pd.DataFrame(rows, columns=columns)


def _job_row(job: Any) -> dict[str, Any]:
    enqueued, started, ended = job.enqueued_at, job.started_at, job.ended_at
    result = job.latest_result()
    traceback_text = (result.exc_string or "") if result is not None else ""
    return {
        "job": job.id,
        "task": _task_name(job),
        "enqueued": _aware(enqueued),
        "wait_ms": _between_ms(enqueued, started),
        "run_ms": _between_ms(started, ended),
        "ended": _aware(ended),
        "error": traceback_text.strip().splitlines()[-1] if traceback_text.strip() else "",
        "traceback": traceback_text,
    }


def _task_name(job: Any) -> str:
    try:
        return str(job.func_name).rsplit(".", 1)[-1]
    except Exception:  # a job whose payload cannot be decoded still gets a row
        return "?"


def _between_ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 1)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
