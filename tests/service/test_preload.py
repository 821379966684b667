"""The service as `latency-lab up` runs it: gunicorn --preload, workers forked from one built app.

What a user would notice if the app were not safe to fork: errors or lost writes when workers
share the master's database connection, and no memory saved. Counted on SQLite and PostgreSQL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from latency_lab.benchmarks.memory import lab_memory
from tests.lab_fixtures import Lab, eventually, start_lab_service, stop_process

WORKERS = 4
WRITES = 24
READS = 96


def test_preloaded_workers_serve_reads_and_writes_on_their_own_connections(
    lab_process_env: dict[str, str], tmp_path: Path
) -> None:
    url, process = start_lab_service(lab_process_env, tmp_path / "service.log", workers=WORKERS)
    try:
        master = psutil.Process(process.pid)
        forked = eventually(lambda: len(master.children()) == WORKERS, timeout_s=10)
        before = httpx.get(f"{url}/api/stats").json()["total"]

        def call(n: int) -> int:
            if n % 5 == 0 and n // 5 < WRITES:
                body = {
                    "company": f"Forked {n}",
                    "contact_name": "Ada Fork",
                    "email": f"fork{n}@example.com",
                    "owner_id": 1,
                }
                headers = {"X-Lab-Toggles": "async_offload=on"}
                return httpx.post(f"{url}/api/leads", json=body, headers=headers).status_code
            toggles = ("eager_loading=on", "", "redis_cache=on,eager_loading=on")[n % 3]
            headers = {"X-Lab-Toggles": toggles} if toggles else {}
            return httpx.get(f"{url}/api/leads?limit=20", headers=headers).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(call, range(READS + WRITES)))
        memory = lab_memory([process.pid])
        totals = {httpx.get(f"{url}/api/stats").json()["total"] for _ in range(3 * WORKERS)}
    finally:
        stop_process(process)

    assert forked, f"{WORKERS} workers were not forked"
    assert statuses.count(201) == WRITES
    assert statuses.count(200) == READS
    assert totals == {before + WRITES}  # every worker sees every write
    # The workers share the master's pages: counted once (PSS), the service is far smaller
    # than its resident sizes summed (without --preload the two are within ~25 % of each other).
    assert memory.pss_mb < 0.7 * memory.rss_mb, memory.as_dict()


def test_building_the_app_records_no_spans(lab: Lab) -> None:
    """A preloaded master builds the app and forks: had it spans to export, a worker forked in
    the middle of that export would inherit its locks, held for ever, and never export one."""
    assert lab.spans.get_finished_spans() == ()  # the shared state read, the schema: none

    lab.get("/api/leads?limit=1", toggles="redis_cache=on")

    assert lab.spans.get_finished_spans() != ()  # requests are traced as ever
