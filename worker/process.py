"""An RQ worker process for the lab's side effects: ``python -m latency_lab.worker.process``.

The jobs wait on the providers (~100 ms each, a few ms of CPU), so one process runs
``LAB_RQ_CONCURRENCY`` of them at once, each on a thread of its own: a *slot*. Each slot is a
real ``rq`` worker (:class:`SideEffectsWorker`, RQ's ``SimpleWorker``: no fork) with RQ's own
loop, registration, heartbeats, retries and registries, so everything RQ shows and does per
worker holds per slot. The process shares one interpreter, one database pool, one HTTP client
and one telemetry pipeline between its slots, where a forking worker paid a fork (and a span
flush) per job and a process per job at a time. RQ 2.12 has no threaded worker; its
``WorkerPool`` runs a process per concurrent job.

A slot runs its job on a thread beside it and watches it the way RQ's forking worker watches its
work horse: heartbeats every ``JOB_MONITORING_INTERVAL_S`` while the job runs. A job's timeout is
RQ's ``TimerDeathPenalty`` (signals are the main thread's). One slot also runs RQ's scheduler
(retries with backoff, :data:`~latency_lab.service.offload.RETRY`), on a thread instead of a
forked process.

A killed process's jobs run again, through RQ's own machinery: they stay in the started-job
registry until their heartbeat lapses, then a worker's registry maintenance retries them as
abandoned jobs. RQ's defaults leave that to chance for minutes (a 90 s heartbeat, maintenance
every 10 minutes, only between dequeues); here it takes about 20 s: heartbeats every
``JOB_MONITORING_INTERVAL_S``, abandoned ``ABANDONED_AFTER_S`` after the last one, and
maintenance every ``MAINTENANCE_INTERVAL_S`` (an idle slot wakes every few seconds). The provider
is called again with the same idempotency key, so a call that had reached it before the kill is
answered as a duplicate, not delivered twice.

Redis failing under a slot makes RQ's worker quit; the slot waits for Redis and starts a new one
(:meth:`WorkerSlots.work_until_stopped`), so a Redis restart does not end the lab's workers.
SIGTERM (or Ctrl-C) is a warm stop: running jobs finish, idle slots leave their blocking dequeue
at once (``CLIENT UNBLOCK``), spans are flushed. A second signal stops at once; the jobs it
interrupts run again as abandoned jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any
from uuid import uuid4

import psutil
import redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scheduler import run as run_scheduler
from rq.scripts import release_lock
from rq.timeouts import TimerDeathPenalty
from rq.worker.base import StopRequested, WorkerStatus

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
WORKER_TTL_S = 20  # an idle slot wakes every WORKER_TTL_S - 15 s, and may do maintenance then
REDIS_WAIT_S = 0.5
STOP_WAIT_S = 30.0  # a warm stop waits this long for running jobs, then leaves them to RQ
CLIENT_NAME = "latency-lab-worker-{pid}"  # how this process's Redis connections are named
BLOCKING_COMMANDS = frozenset({"blmove", "blpop", "brpoplpush"})

log = logging.getLogger(__name__)


class SchedulerThread(RQScheduler):
    """RQ's scheduler (due retries back into the queue) on a thread of this process.

    A scheduler's lock outlives a killed process by a minute (RQ's TTL), and no retry is
    scheduled until it lapses; a lock whose owner was a process of this machine that no longer
    runs is released at once (:meth:`release_locks_of_dead_schedulers`).
    """

    def acquire_locks(self, auto_start: bool = False) -> Any:
        self.release_locks_of_dead_schedulers()
        return super().acquire_locks(auto_start)

    def release_locks_of_dead_schedulers(self) -> None:
        for queue_name in self._queue_names:
            key = self.get_locking_key(queue_name)
            owner = self.connection.get(key)
            if owner is None or owner.decode() == self.name:
                continue
            holder = self.connection.hgetall(SCHEDULER_KEY_TEMPLATE % owner.decode())
            host, pid = holder.get(b"hostname", b"").decode(), int(holder.get(b"pid", 0))
            if host == self.hostname and pid and not psutil.pid_exists(pid):
                log.info("scheduler lock of %s: its process %d is gone, released", queue_name, pid)
                release_lock(self.connection, key, owner.decode())

    def _install_signal_handlers(self) -> None:
        """The process's main thread handles signals and stops the scheduler."""

    def start(self) -> Any:
        self._status = self.Status.STARTED
        thread = threading.Thread(target=run_scheduler, args=(self,), name="rq-scheduler")
        thread.daemon = True
        self._process = thread  # type: ignore[assignment]  # RQ restarts it when not is_alive()
        thread.start()
        return thread

    def stop_thread(self) -> None:
        self.request_stop()
        if self._process is not None:
            self._process.join(timeout=self.interval + 2)


class SideEffectsWorker(SimpleWorker):
    """One slot: RQ's worker loop on a thread, one job at a time, abandoned in seconds."""

    death_penalty_class = TimerDeathPenalty  # job timeouts without SIGALRM
    max_connection_wait_time = 5.0  # between dequeue attempts while Redis is down (RQ: 60 s)
    log_result_lifespan = False  # one log line less per job

    def __init__(self, *args: Any, stopping: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = stopping
        # The job's thread ends its execution (cleanup_execution: execution = None) while this
        # slot may be heartbeating it: one at a time, and no heartbeat for a finished execution.
        self._execution_lock = threading.Lock()

    def maintain_heartbeats(self, job: Job) -> None:
        with self._execution_lock:
            if self.execution is None:  # the job ended meanwhile: nothing left to keep alive
                return
            super().maintain_heartbeats(job)

    def cleanup_execution(self, job: Job, pipeline: Pipeline) -> None:
        with self._execution_lock:
            super().cleanup_execution(job, pipeline)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, registering the worker again when its record vanished: a Redis
        restart loses every key, and RQ's loop reconnects without registering, so the worker
        would run on unseen (no Background jobs row, no registry its jobs are checked against)."""
        if pipeline is None and not self.connection.exists(self.key):
            log.warning("worker %s: its record vanished (Redis restarted?): registering", self.name)
            self.register_birth()
        super().heartbeat(timeout, pipeline)

    def get_heartbeat_ttl(self, job: Job) -> int:
        # RQ: the job's timeout + 60 s for a worker that does not fork.
        return int(self.job_monitoring_interval) + ABANDONED_AFTER_S

    def execute_job(self, job: Job, queue: Queue) -> None:
        """The job on a thread beside the slot, heartbeats while it runs (as RQ's forking
        worker does while its work horse runs)."""
        self.prepare_execution(job)
        name = f"{threading.current_thread().name}-job"
        # A daemon: past STOP_WAIT_S a stop leaves a running job to RQ (abandoned, retried)
        # instead of waiting for it at interpreter exit.
        runner = threading.Thread(
            target=self.perform_job, args=(job, queue), name=name, daemon=True
        )
        runner.start()
        runner.join(self.job_monitoring_interval)
        while runner.is_alive():
            self.maintain_heartbeats(job)
            runner.join(self.job_monitoring_interval)
        self.set_state(WorkerStatus.IDLE)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if self.stopping.is_set():
            raise StopRequested()
        try:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        except redis.ResponseError as exc:  # CLIENT UNBLOCK ... ERROR: nothing was dequeued
            if self.stopping.is_set() and "UNBLOCKED" in str(exc):
                raise StopRequested() from None
            raise

    # The process's main thread owns signals and the process title; the scheduler is a thread.
    def _install_signal_handlers(self) -> None:
        pass

    def procline(self, message: str) -> None:
        pass

    def _start_scheduler(self, *_args: Any, **_kwargs: Any) -> None:
        self.scheduler = SchedulerThread(
            self.queues, connection=self.connection, serializer=self.serializer
        )
        self.scheduler.acquire_locks(auto_start=True)

    def stop_scheduler(self) -> None:
        if isinstance(self.scheduler, SchedulerThread):
            self.scheduler.stop_thread()


def prepare_process(settings: Settings) -> tuple[redis.Redis, telemetry.ProcessTelemetry]:
    """Telemetry, the database and the task context of this worker process; its Redis client."""
    lab = telemetry.configure(
        "latency-lab-worker",
        role="worker",
        **settings.telemetry_options(),
        set_global=True,
    )
    client = connect_redis(settings.redis_url, socket_timeout_s=5)
    # Named, so that a stop can find this process's blocked dequeues (CLIENT LIST).
    client.connection_pool.connection_kwargs["client_name"] = CLIENT_NAME.format(pid=os.getpid())
    # Its own client: RQ raises the socket timeout of the client its workers use (to 15 s),
    # and the world must keep following the shared state within a second.
    state = SharedState(connect_redis(settings.redis_url, socket_timeout_s=5))
    engine = build_engine(settings.resolved_database_url, pool_size=settings.rq_concurrency)
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
            # The batch processor exports while the process lives; the stop flushes the rest.
            flush=lambda: None,
        )
    )
    return client, lab


def new_worker(
    client: redis.Redis, stopping: threading.Event, name: str | None = None
) -> SideEffectsWorker:
    return SideEffectsWorker(
        [Queue(QUEUE_NAME, connection=client)],
        name=f"{name or 'slot'}-{uuid4().hex[:8]}",
        connection=client,
        job_class=tasks.TracedJob,
        job_monitoring_interval=JOB_MONITORING_INTERVAL_S,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
        worker_ttl=WORKER_TTL_S,
        stopping=stopping,
    )


class WorkerSlots:
    """This process's slots: ``concurrency`` RQ workers on threads (the first also runs the
    scheduler), until ``stopping`` is set; then running jobs finish and idle slots leave."""

    def __init__(self, client: redis.Redis, concurrency: int, stopping: threading.Event) -> None:
        self.client = client
        self.concurrency = concurrency
        self.stopping = stopping
        # The names this process's Redis connections go by: its own, and each RQ worker's (RQ
        # names a pooled connection after the worker it builds).
        self.connection_names = {CLIENT_NAME.format(pid=os.getpid())}

    def run(self) -> None:
        slots = [
            threading.Thread(
                target=self.work_until_stopped, args=(n,), name=f"slot-{n}", daemon=True
            )
            for n in range(1, self.concurrency + 1)
        ]
        for slot in slots:
            slot.start()
        while not self.stopping.wait(1.0):
            pass
        deadline = time.monotonic() + STOP_WAIT_S
        for slot in slots:
            while slot.is_alive() and time.monotonic() < deadline:
                self.unblock_idle()  # again: a slot may have just entered its dequeue
                slot.join(0.2)

    def work_until_stopped(self, n: int) -> None:
        """Run slot ``n``'s RQ worker; when Redis failed under it (RQ's worker then quits),
        wait and start anew, until stopped.

        Without this a Redis restart would end every slot, and ``latency-lab up`` stops the
        whole lab when one of its processes ends.
        """
        while not self.stopping.is_set():
            worker = new_worker(self.client, self.stopping, f"{os.getpid()}-{n}")
            self.connection_names.add(worker.name)
            try:
                worker.work(with_scheduler=n == 1)
            except redis.RedisError as exc:  # from RQ's teardown, with Redis still down
                log.warning("worker %s: Redis failed under it (%s)", worker.name, exc)
            except Exception:  # a slot never dies silently: the process would lose capacity
                log.exception("worker %s: unexpected failure", worker.name)
            if self.stopping.is_set():
                return
            log.warning("worker %s quit; starting a new one once Redis answers", worker.name)
            self._wait_for_redis()

    def _wait_for_redis(self) -> None:
        while not self.stopping.is_set():
            try:
                self.client.ping()
                return
            except redis.RedisError:
                self.stopping.wait(REDIS_WAIT_S)

    def unblock_idle(self) -> int:
        """End this process's blocked dequeues now (they would wait out their timeout): Redis
        answers them with an error, and nothing is dequeued. Returns how many were unblocked."""
        unblocked = 0
        try:
            for entry in self.client.client_list():
                mine = entry.get("name") in self.connection_names
                if mine and entry.get("cmd") in BLOCKING_COMMANDS:
                    unblocked += int(self.client.client_unblock(int(entry["id"]), error=True))
        except redis.RedisError as exc:  # Redis down: the slots are not blocked on it either
            log.debug("could not unblock idle slots: %s", exc)
        return unblocked


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    settings = settings_or_exit("worker")
    client, lab = prepare_process(settings)
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():  # the second signal: stop now; RQ retries what was running
            log.warning("worker: stopping now (signal %s)", signum)
            os._exit(1)
        log.info("worker: warm stop (signal %s): running jobs finish", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("worker: %d slots on queue %s", settings.rq_concurrency, QUEUE_NAME)
    WorkerSlots(client, settings.rq_concurrency, stopping).run()
    lab.force_flush()


if __name__ == "__main__":
    main()
