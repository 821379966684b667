"""The dashboard in a real browser against the running lab: flip a switch, drive load, watch.

``latency-lab up`` starts the whole lab (private Redis, seeded database, simulator, service, RQ
worker, edge, dashboard) on free ports in a temporary ``LAB_VAR_DIR``; Playwright drives
Debian's Chromium (``/usr/bin/chromium``: ``playwright install`` cannot download here). The test
does what a workshop attendee does: open the dashboard, send the N+1 page some traffic, switch
eager loading on, send the same traffic again, and read statements per request fall from
1 + 3N to 1. Screenshots land in ``test-artifacts/`` (gitignored).

Skipped, with the reason, where Chromium is missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.dashboard.chromium import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.lab_fixtures import latency_lab_up

pytestmark = pytest.mark.browser

LEADS = 300  # every list page the generator asks for (offsets 0, 100, 200) holds 100 leads
PAGE_SIZE = 100
LAZY_STATEMENTS = 1 + 3 * PAGE_SIZE
REQUESTS = 60
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 1500, 2400  # tall: Streamlit scrolls inside stMain


@dataclass(frozen=True)
class RunningLab:
    dashboard: str
    service: str


@pytest.fixture(scope="module")
def running_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    require_chromium()
    with latency_lab_up(tmp_path_factory.mktemp("lab"), seed_leads=LEADS) as urls:
        yield RunningLab(urls["dashboard"], urls["service"])


def _wait_for_lab_toggle(service_url: str, name: str) -> None:
    """The switch moves in the browser before the dashboard's callback reaches the lab."""
    deadline = time.monotonic() + 30  # the dashboard's PUT can queue behind a busy lab
    while time.monotonic() < deadline:
        answer = httpx.get(f"{service_url}/admin/toggles", timeout=5).json()
        if answer["toggles"][name]:
            return
        time.sleep(0.1)
    raise AssertionError(f"the lab never switched {name} on: {answer}")


def test_eager_loading_switched_on_in_the_browser_drops_statements_per_request(
    running_lab: RunningLab,
) -> None:
    from playwright.sync_api import Page, expect, sync_playwright

    def live_statements(page: Page) -> float | None:
        card = page.locator('[data-testid="stMetric"]').filter(has_text="Statements / request")
        if card.count() == 0:
            return None
        text = card.locator('[data-testid="stMetricValue"]').inner_text().replace(",", "")
        return float(text) if re.fullmatch(r"[\d.]+", text) else None

    def wait_for_live(page: Page, accept: object, what: str) -> float:
        deadline, value = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            value = live_statements(page)
            if value is not None and accept(value):  # type: ignore[operator]
                return value
            page.wait_for_timeout(500)
        raise AssertionError(f"live statements/request never {what} (last: {value})")

    def drive_load(page: Page, run: int, expected_statements: str) -> None:
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_role("button", name="Start").click()
        finished = sidebar.get_by_text(
            re.compile(rf"^Run {run}: {REQUESTS}/{REQUESTS} requests, finished")
        )
        expect(finished).to_be_visible(timeout=60_000)
        expect(sidebar.get_by_text(f"Statements / request: {expected_statements}")).to_be_visible(
            timeout=5_000
        )

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT})
        try:
            page.goto(running_lab.dashboard)
            sidebar = page.locator('[data-testid="stSidebar"]')
            expect(sidebar.get_by_text("Eager loading (fix the N+1)")).to_be_visible(timeout=30_000)
            sidebar.get_by_text("Lead list only (the N+1 page)").click()
            requests_input = sidebar.get_by_label("Requests", exact=True)
            requests_input.fill(str(REQUESTS))
            requests_input.press("Enter")
            expect(requests_input).to_have_value(str(REQUESTS))

            drive_load(page, 1, f"{LAZY_STATEMENTS}.0")
            before = wait_for_live(page, lambda v: v == LAZY_STATEMENTS, "reached 1 + 3N")

            switch = page.locator('[data-testid="stCheckbox"]').filter(has_text="Eager loading")
            switch.locator("label").click()
            expect(switch.get_by_role("switch")).to_be_checked(timeout=10_000)
            _wait_for_lab_toggle(running_lab.service, "eager_loading")  # the UI flips at once
            page.wait_for_timeout(1_200)  # every service process follows within a second

            drive_load(page, 2, "1.0")
            after = wait_for_live(page, lambda v: v == 1.0, "fell to the eager count")
            page.wait_for_timeout(2_500)  # one more refresh, so the charts hold the new runs
            page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"))

            for name in ("compare", "trace_explorer"):
                page.goto(f"{running_lab.dashboard}/{name}")
                expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(
                    timeout=30_000
                )
                page.wait_for_timeout(1_500)
                page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"))
            raise
        finally:
            browser.close()

    assert (before, after) == (LAZY_STATEMENTS, 1.0)


PAGES = {
    "live": "Live",
    "compare": "Compare configurations",
    "trace_explorer": "Trace explorer",
    "jobs": "Background jobs",
    "tour": "Guided tour",
    "world": "Simulated world",
}


def test_every_pages_url_opens_that_page(running_lab: RunningLab) -> None:
    """A URL from the address bar, or shared by a workshop host, opens its page; ``/`` opens
    Live at ``/live`` with its query parameters."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": VIEWPORT_WIDTH, "height": 1200})
        try:
            for path, title in PAGES.items():
                page.goto(f"{running_lab.dashboard}/{path}")
                heading = page.locator("h1").filter(has_text=re.compile(rf"^{title}$"))
                expect(heading).to_be_visible(timeout=30_000)
                expect(page.get_by_text("Page not found")).to_have_count(0)
                assert page.url.split("?")[0].rstrip("/").endswith(f"/{path}")
            page.goto(f"{running_lab.dashboard}/?window=300")
            expect(page.locator("h1").filter(has_text=re.compile("^Live$"))).to_be_visible(
                timeout=30_000
            )
            page.wait_for_url(re.compile(r"/live\?window=300$"), timeout=10_000)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-deep-link-failure.png"))
            raise
        finally:
            browser.close()
