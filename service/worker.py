"""An RQ worker process for the lab's side effects: ``python -m service.worker``.

A real ``rq`` worker (forking a work horse per job, with the scheduler for retries) whose jobs
are :class:`~service.jobs.TracedJob`, with telemetry and the task context set up first.
"""

from __future__ import annotations

import logging

from rq import Queue, Worker

import telemetry
from service import jobs
from service.config import Settings
from service.db import build_engine, inject_round_trip, session_factory
from service.offload import QUEUE_NAME
from service.shared_state import SharedState, connect_redis
from service.third_party import ThirdPartyClient
from telemetry import vocabulary as v
from telemetry.orm import instrument_engine


def build_worker(settings: Settings) -> Worker:
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
    jobs.bind(
        jobs.TaskContext(
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
    queue = Queue(QUEUE_NAME, connection=client)
    return Worker([queue], connection=client, job_class=jobs.TracedJob)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    worker = build_worker(Settings())
    worker.work(with_scheduler=True)


if __name__ == "__main__":
    main()
