"""The bench's idle-relay figure: statements per 5 s of a relay with nothing to do (goal <= 1)."""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry import trace

from latency_lab.benchmarks.relay_idle import measure_idle_relay, measure_running_relay
from latency_lab.service.db import build_engine
from latency_lab.worker.relay import relay_on


def test_an_idle_relay_started_here_meets_the_goal(sqlite_url: str, lab_redis: str) -> None:
    idle = measure_idle_relay(sqlite_url, lab_redis, window_s=6.0, safety_net_s=3.0)

    assert idle.counted_by == "sqlalchemy"
    # One look at each 3 s safety net, one statement each: 2 in a 6 s window, 1 to 3 depending
    # on where the looks fall on a busy machine.
    assert 1 <= idle.statements <= 3
    assert idle.per_5_s == pytest.approx(idle.statements * 5 / 6)
    assert measure_idle_relay(sqlite_url, lab_redis, window_s=6.0).statements == 0


@pytest.mark.postgres
def test_a_running_relay_is_watched_by_the_servers_counters(
    postgres_database: str, lab_redis: str
) -> None:
    engine = build_engine(postgres_database)
    relay = relay_on(engine, lab_redis, tracer=trace.get_tracer(__name__))
    stop = threading.Event()
    runner = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    runner.start()
    try:
        time.sleep(11.0)  # the server publishes an idle connection's counters within 10 s
        idle = measure_running_relay(postgres_database, window_s=5.0)
    finally:
        stop.set()
        runner.join(timeout=10)
        engine.dispose()

    assert idle.counted_by == "pg_stat_user_tables"
    assert idle.statements == 0 and idle.meets_goal


def test_a_running_relay_on_sqlite_is_measured_in_process_instead(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="measure_idle_relay"):
        measure_running_relay(sqlite_url, window_s=0.1)
