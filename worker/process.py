"""An RQ worker process for the lab's side effects: ``python -m latency_lab.worker.process``.

A real ``rq`` worker (forking a work horse per job, with the scheduler for retries) whose jobs
are :class:`~latency_lab.service.tasks.TracedJob`, with telemetry and the task context set up first.

A killed job runs again, through RQ's own machinery:

* a work horse killed mid-job (SIGKILL, the OOM killer): its worker sees it die and fails the
  job, which is retried with backoff (``latency_lab.service.offload.RETRY``);
* a whole worker killed mid-job: its job stays in the started-job registry until its heartbeat
  expires, then a worker's registry maintenance retries it as an abandoned job. RQ's defaults
  leave that to chance for minutes (a 90 s heartbeat, maintenance every 10 minutes, only
  between dequeues); :class:`SideEffectsWorker` makes it about 20 s: heartbeats every
  ``JOB_MONITORING_INTERVAL_S``, abandoned ``ABANDONED_AFTER_S`` after the last one, and
  maintenance every ``MAINTENANCE_INTERVAL_S`` (an idle worker wakes every few seconds).

Either way the provider is called again with the same idempotency key, so a call that had
reached it before the kill is answered as a duplicate, not delivered twice.

Redis failing under a worker makes RQ's worker quit; the process waits for Redis and starts a
new one (:func:`work_until_stopped`), so a Redis restart does not end the lab's workers.
"""

from __future__ import annotations

import logging
import time

import redis
from rq import Queue, Worker
from rq.job import Job

from latency_lab import telemetry
from latency_lab.core.settings import Settings, settings_or_exit
from latency_lab.core.shared_state import SharedState, connect_redis
from latency_lab.service import tasks
from latency_lab.service.db import build_engine, inject_round_trip, session_factory
from latency_lab.service.offload import QUEUE_NAME
from latency_lab.service.providers import ThirdPartyClient
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.orm import instrument_engine

JOB_MONITORING_INTERVAL_S = 2
ABANDONED_AFTER_S = 10
MAINTENANCE_INTERVAL_S = 5
WORKER_TTL_S = 20  # an idle worker wakes every WORKER_TTL_S - 15 s, and may do maintenance then
REDIS_WAIT_S = 0.5

log = logging.getLogger(__name__)


class SideEffectsWorker(Worker):
    """RQ's worker, declaring a dead worker's job abandoned in seconds rather than minutes."""

    stop_requested = False  # SIGINT/SIGTERM arrived (RQ's warm shutdown)
    max_connection_wait_time = 5.0  # between dequeue attempts while Redis is down (RQ: 60 s)

    def get_heartbeat_ttl(self, job: Job) -> int:
        # RQ: min(remaining job time, monitoring interval) + 60 s.
        return int(self.job_monitoring_interval) + ABANDONED_AFTER_S

    def handle_warm_shutdown_request(self) -> None:
        self.stop_requested = True
        super().handle_warm_shutdown_request()


def prepare_process(settings: Settings) -> redis.Redis:
    """Telemetry, the database and the task context of this worker process; its Redis client."""
    lab = telemetry.configure(
        "latency-lab-worker",
        role="worker",
        **settings.telemetry_options(),
        set_global=True,
    )
    client = connect_redis(settings.redis_url, socket_timeout_s=5)
    state = SharedState(client)
    engine = build_engine(settings.resolved_database_url)
    instrument_engine(engine, lab.tracer_provider)
    inject_round_trip(engine, lambda: state.world.db_round_trip_ms)
    tasks.bind(
        tasks.TaskContext(
            sessions=session_factory(engine),
            third_party=ThirdPartyClient(
                settings.resolved_thirdparty_url,
                tracer_provider=lab.tracer_provider,
                timeout_s=lambda: state.world.third_party_timeout_s,
            ),
            mode=v.CallMode.OFFLOADED,
            flush=lab.force_flush,
        )
    )
    return client


def new_worker(client: redis.Redis) -> SideEffectsWorker:
    return SideEffectsWorker(
        [Queue(QUEUE_NAME, connection=client)],
        connection=client,
        job_class=tasks.TracedJob,
        job_monitoring_interval=JOB_MONITORING_INTERVAL_S,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
        worker_ttl=WORKER_TTL_S,
    )


def build_worker(settings: Settings) -> SideEffectsWorker:
    return new_worker(prepare_process(settings))


def work_until_stopped(client: redis.Redis) -> None:
    """Run a worker; when Redis failed under it (RQ's worker then quits), wait and start anew.

    Without this a Redis restart would end every worker process, and ``latency-lab up`` stops
    the whole lab when one of its processes ends.
    """
    while True:
        worker = new_worker(client)
        try:
            worker.work(with_scheduler=True)
        except redis.RedisError as exc:  # from RQ's teardown, with Redis still down
            log.warning("worker: Redis failed under the worker (%s)", exc)
        if worker.stop_requested:
            return
        log.warning("worker: the RQ worker quit; starting a new one once Redis answers")
        _wait_for_redis(client)


def _wait_for_redis(client: redis.Redis) -> None:
    while True:
        try:
            client.ping()
            return
        except redis.RedisError:
            time.sleep(REDIS_WAIT_S)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    work_until_stopped(prepare_process(settings_or_exit("worker")))


if __name__ == "__main__":
    main()
