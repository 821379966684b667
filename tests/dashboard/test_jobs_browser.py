"""The Background jobs page in Chromium, tied to the jobs that produced its numbers.

Known jobs are enqueued as the service enqueues a read's analytics event, with no worker
running: the page must show them all queued, their arrival rate (jobs over its 30 s window),
nothing completing, an endless expected wait, and say that arrivals outrun completions and that
no worker runs. Then a real worker process starts: the page must show the same jobs completed
and the queue keeping up. Skipped, with the reason, where Chromium is missing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from opentelemetry import trace
from rq import Queue

from latency_lab.lab.programs import dashboard_script
from latency_lab.lab.redis_server import free_port
from latency_lab.service import tasks
from latency_lab.service.offload import QUEUE_NAME, enqueue
from tests.dashboard.chromium import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.dashboard.conftest import FakeLab
from tests.lab_fixtures import ThirdParty, process_env, start_process, stop_process

pytestmark = pytest.mark.browser

JOBS = 24  # 0.8/s over the page's 30 s window
WAIT_S = 30.0


@pytest.fixture
def dashboard(
    lab_redis: str, fake_lab: FakeLab, thirdparty: ThirdParty, sqlite_url: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """The dashboard as `latency-lab up` starts it, on this test's Redis; the environment a
    worker process of the same lab gets."""
    require_chromium()
    port = free_port()
    env = process_env(
        REDIS_URL=lab_redis,
        LAB_VAR_DIR=str(tmp_path),
        LAB_TRACE_STORE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
        LAB_DATABASE_URL=sqlite_url,
        LAB_SERVICE_URL=fake_lab.url,
        LAB_EDGE_URL=fake_lab.url,
        LAB_THIRDPARTY_URL=thirdparty.url,
        LAB_DASHBOARD_PORT=str(port),
    )
    argv = [sys.executable, "-m", "streamlit", "run", str(dashboard_script()),
            "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false"]  # fmt: skip
    process = start_process(argv, env=env, log_file=tmp_path / "dashboard.log")
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _healthy(url), "the dashboard to start", timeout_s=60)
        yield url, env
    finally:
        stop_process(process)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.5)
    return value


def cards(page: Any) -> dict[str, str]:
    out = {}
    for card in page.locator('[data-testid="stMetric"]').all():
        label = card.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        out[label] = card.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return out


def test_the_jobs_page_says_arrivals_outrun_completions_then_that_the_queue_keeps_up(
    dashboard: tuple[str, dict[str, str]], lab_redis: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    url, env = dashboard
    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(lab_redis))
    tracer = trace.get_tracer("test")
    for n in range(JOBS):  # what reads enqueue with async_offload on, and no worker runs
        enqueue(tasks.track_event, {"name": "leads.list", "event_id": f"read-{n}"},
                queue=queue, tracer=tracer)  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 2400})
        worker = None
        try:
            page.goto(f"{url}/jobs")
            behind = {"Queued": f"{JOBS}", "Arrivals": "0.8/s", "Completions": "0.0/s",
                      "Expected wait": "∞", "Slots busy": "0 of 0"}  # fmt: skip
            shown = _until(lambda: (c := cards(page)) and _has(c, behind) and c, "the backlog")
            warning = page.locator('[data-testid="stAlert"]').all_inner_texts()
            said = "\n".join(warning)
            assert "Arrivals outrun completions: 0.8 jobs/s arrive, 0.0/s complete" in said
            assert f"({JOBS} queued)" in said and "until a worker takes it" in said
            assert "No RQ worker is running" in said

            worker = start_process([sys.executable, "-m", "latency_lab.worker.process"],
                                   env=env, log_file=tmp_path / "worker.log")  # fmt: skip
            done = {"Queued": "0", "Finished": f"{JOBS}", "Arrivals": "0.8/s",
                    "Completions": "0.8/s", "Expected wait": "0.0 s"}  # fmt: skip
            shown = _until(lambda: (c := cards(page)) and _has(c, done) and c, "the drain")
            assert shown["Slots busy"].endswith("of 16")  # one process, LAB_RQ_CONCURRENCY
            caption = page.get_by_text("Keeping up: 0.8 jobs/s arrive, 0.8/s complete")
            assert caption.count() == 1
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "jobs-page-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
            if worker is not None:
                stop_process(worker)


def _has(shown: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(shown.get(label) == value for label, value in wanted.items())
