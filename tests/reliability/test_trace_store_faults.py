"""The trace store locked, unwritable or overwhelmed: requests do not notice; the spans that
could not be written are counted as dropped, on ``/healthz`` and in the store itself."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx

from latency_lab.telemetry.store import TraceStore
from tests.lab_fixtures import eventually
from tests.reliability.conftest import Stack


def telemetry_of(url: str) -> dict[str, int]:
    body = httpx.get(f"{url}/healthz", timeout=5).json()
    return dict(body["telemetry"])


def timed_reads(url: str, count: int) -> list[tuple[int, float]]:
    out = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for n in range(count):
            started = time.perf_counter()
            response = client.get(f"/api/leads/{n % 50 + 1}")
            out.append((response.status_code, time.perf_counter() - started))
    return out


def test_an_unwritable_store_drops_and_counts_spans_and_requests_go_on(
    stack: Stack, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("the store's directory cannot be created under a file")
    url = stack.start_service(LAB_TRACE_STORE_URL=f"sqlite:///{not_a_directory}/traces.db")

    results = timed_reads(url, 20)

    assert [status for status, _ in results] == [200] * 20
    assert max(seconds for _, seconds in results) < 0.5
    dropped = eventually(lambda: telemetry_of(url)["dropped_spans"] >= 20, timeout_s=10)
    assert dropped, telemetry_of(url)
    assert telemetry_of(url)["exported_spans"] == 0


def test_a_locked_store_overflows_the_queue_and_recovers(stack: Stack) -> None:
    url = stack.start_service(OTEL_BSP_MAX_QUEUE_SIZE="50", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="10")
    timed_reads(url, 3)
    store = TraceStore(stack.trace_store_url).create()
    assert eventually(lambda: store.counts()["spans"] > 0, timeout_s=10)
    unlocked = threading.Event()

    def hold_the_lock() -> None:
        path = stack.trace_store_url.removeprefix("sqlite:///")
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        connection.execute("BEGIN EXCLUSIVE")
        unlocked.wait(4.0)
        connection.execute("ROLLBACK")
        connection.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    time.sleep(0.3)
    locked_at = time.time_ns()
    results = timed_reads(url, 40)  # ~10 spans each: far more than the queue holds
    unlocked.set()
    holder.join()

    assert [status for status, _ in results] == [200] * 40
    assert max(seconds for _, seconds in results) < 0.5, "a request waited for the store"
    assert eventually(lambda: telemetry_of(url)["dropped_spans"] > 0, timeout_s=10)
    timed_reads(url, 3)
    recovered = eventually(
        lambda: any(r["start_ns"] > locked_at for r in store.recent_requests(200)), timeout_s=15
    )
    assert recovered, "no span written after the lock was released"
    assert eventually(lambda: store.dropped_spans() > 0, timeout_s=10)  # the dashboard's count
    store.close()
