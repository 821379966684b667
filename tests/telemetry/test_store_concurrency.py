"""Many processes write to one store while the dashboard reads it: nothing lost, nothing torn."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import func, select

from latency_lab.telemetry.store import TraceStore, requests_table, spans_table

WRITERS = 4
SPANS_PER_WRITER = 2_000
SPANS_PER_TRACE = 10
CHECKOUT = Path(__file__).resolve().parents[2]


class Observer(threading.Thread):
    """Reads the store in a loop, as the dashboard does, recording each consistent snapshot."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.store = TraceStore(url).create()
        self.snapshots: list[tuple[int, int, int]] = []
        self.done = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.done.is_set():
                self.snapshots.append(self.snapshot())
                self.done.wait(0.005)
            self.snapshots.append(self.snapshot())
        except BaseException as error:  # surfaced by the test, not lost in the thread
            self.errors.append(error)

    def snapshot(self) -> tuple[int, int, int]:
        """(spans, requests, SERVER spans), in one statement: one snapshot on both databases."""
        counts = self.store.counts()
        servers = (
            select(func.count()).select_from(spans_table).where(spans_table.c.kind == "SERVER")
        )
        requests = select(func.count()).select_from(requests_table)
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(servers.scalar_subquery(), requests.scalar_subquery())
            ).one()
        assert row[0] == row[1], f"requests torn from their spans: {row[0]} != {row[1]}"
        return counts["spans"], counts["requests"], row[0]


def _writer(url: str, number: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.telemetry.store_writer", url]
    return subprocess.Popen(
        [*command, str(SPANS_PER_WRITER), f"writer-{number}"],
        cwd=CHECKOUT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_writers_lose_nothing_while_a_reader_reads(store_url: str) -> None:
    observer = Observer(store_url)
    observer.start()
    writers = [_writer(store_url, number) for number in range(WRITERS)]
    reports = []
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    observer.done.set()
    observer.join(timeout=30)

    assert observer.errors == []
    assert reports == [{"exported": SPANS_PER_WRITER, "dropped": 0}] * WRITERS
    total = WRITERS * SPANS_PER_WRITER
    assert observer.snapshots[-1] == (total, total // SPANS_PER_TRACE, total // SPANS_PER_TRACE)
    spans_seen = [spans for spans, _, _ in observer.snapshots]
    assert spans_seen == sorted(spans_seen), "a reader saw the span count go down"
    assert len(set(spans_seen)) > 2, "the reader should have watched the writes happen"
    store = TraceStore(store_url)
    per_service = {row["config"]: row["requests"] for row in store.aggregate_by_config()}
    assert per_service == {
        f"writer-{n}": SPANS_PER_WRITER // SPANS_PER_TRACE for n in range(WRITERS)
    }
    assert store.dropped_spans() == 0
    assert len(store.process_stats()) == WRITERS
    store.close()
    observer.store.close()


def test_processes_creating_the_store_at_once(store_url: str) -> None:
    """Several processes starting together all create the tables; none of them fails."""
    script = (
        "import sys; from latency_lab.telemetry.store import TraceStore; "
        "TraceStore(sys.argv[1]).create()"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, store_url], cwd=CHECKOUT)
        for _ in range(WRITERS)
    ]
    assert [run.wait(timeout=60) for run in runs] == [0] * WRITERS
    store = TraceStore(store_url)
    assert store.counts() == {"spans": 0, "requests": 0}
    store.close()
