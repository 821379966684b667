"""The truth test: what a person reads on the dashboard is what the requests measured.

``latency-lab up`` starts the lab as a user does (a small data set: 12 leads, pages of 10, so
all off still costs 1 + 3N = 31 statements per list request). The test then drives known traffic
through the edge (the front door) in three configurations and keeps every response's
``Server-Timing``, ``traceresponse``, ``X-Cache`` and ``X-Lab-Config``:

* **all off**: the shared toggles as the lab starts;
* **eager + offload**: two switches flipped *in the browser*, in the sidebar;
* **all on**: pinned per request with ``X-Lab-Toggles``.

Then it opens each page in Chromium and reads what a person reads: the Live cards after each
configuration (with their deltas), the Compare table and its headline, the Trace explorer's
cards, waterfall legend and bars for trace ids taken from ``traceresponse`` headers (typed into
the page's trace id box), the guided tour's live checks and the Background jobs counts.

Every expected number is computed here from the responses: counts, averages and hit rates from
``Server-Timing``; latency percentiles (the dashboard's latency is the front door's server span,
not what the client measured) from the edge's summary rows *of those trace ids*, with the lab's
one percentile definition (nearest rank); formatting as the page formats it. A mismatch is
collected, not raised at once, so one run shows every page; the report (expected vs shown, per
page) is printed and visible with ``pytest -s``. Numbers the requests cannot explain (they come
from elsewhere: process gauges, span-kind times without a ``Server-Timing`` counterpart) are
listed as ``untied`` in the report, not silently skipped.

Tables: Streamlit draws ``st.dataframe`` on a canvas; its cells are read from the grid's
accessible table, which holds the raw values, and formatted with the column's own format (the
``TABLE_COLUMNS`` of the page), which is what the canvas draws.

Skipped, with the reason, where Chromium is missing.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
import pytest
import redis

from latency_lab.core.toggles import Toggles
from latency_lab.dashboard import configs, panels, tour_steps
from latency_lab.dashboard.views.compare import TABLE_COLUMNS
from latency_lab.telemetry.percentiles import nearest_rank
from latency_lab.telemetry.store import TraceStore
from tests.dashboard.chromium import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.lab_fixtures import latency_lab_up

pytestmark = pytest.mark.browser

# Wide, so every column of the Compare table is in the grid's accessible table; tall, because
# Streamlit scrolls inside stMain.
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 2400, 2400
LEADS, PAGE_SIZE = 12, 10
LIST = f"/api/leads?limit={PAGE_SIZE}"
LIST_SAME_PAGE = f"/api/leads?offset=0&limit={PAGE_SIZE}"  # another edge entry, the same L1 key
STATS = "/api/stats"
LAZY_STATEMENTS = 1 + 3 * PAGE_SIZE
ALL_OFF = Toggles().label()
EAGER_OFFLOAD = Toggles(eager_loading=True, async_offload=True).label()
ALL_ON = Toggles.all_on().label()
TRAFFIC = {  # configuration -> the requests sent in it, in order
    ALL_OFF: [LIST] * 6 + [STATS],
    EAGER_OFFLOAD: [LIST] * 5 + [STATS],
    ALL_ON: [LIST] * 4 + [LIST_SAME_PAGE, STATS, STATS],
}
EDGE_ROLE, SERVICE_ROLE = "edge", "service"
WAIT_S = 30.0


# --- what the responses said ----------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """One ``Server-Timing`` header, read independently of the lab's own parser."""

    statements: int
    db_ms: float
    ext_calls: int
    ext_ms: float
    jobs: int
    cache: dict[str, str]  # layer -> "hit" | "miss"

    @classmethod
    def parse(cls, header: str) -> Timing:
        metrics: dict[str, dict[str, str]] = {}
        for part in header.split(","):
            name, *params = (piece.strip() for piece in part.split(";"))
            metrics[name] = {
                key: value.strip('"')
                for key, _, value in (param.partition("=") for param in params)
            }

        def number(name: str, unit: str) -> int:
            match = re.fullmatch(rf"(\d+) {unit}", metrics.get(name, {}).get("desc", f"0 {unit}"))
            assert match, f"unreadable {name} in Server-Timing: {header}"
            return int(match.group(1))

        return cls(
            statements=number("db", "statements"),
            db_ms=float(metrics["db"]["dur"]),
            ext_calls=number("ext", "calls"),
            ext_ms=float(metrics["ext"]["dur"]),
            jobs=number("queue", "jobs"),
            cache={
                name.removeprefix("cache-"): params["desc"]
                for name, params in metrics.items()
                if name.startswith("cache-")
            },
        )


@dataclass(frozen=True)
class Exchange:
    """One request the test sent and what its response said about itself."""

    config: str  # the configuration the test asked for
    path: str
    status: int
    x_cache: str
    lab_config: str
    timing: Timing
    trace_id: str
    client_ms: float

    @property
    def reached_service(self) -> bool:
        return self.x_cache != "HIT"


def send(client: httpx.Client, config: str, path: str, pin: bool) -> Exchange:
    headers = {"X-Lab-Toggles": config} if pin else {}
    started = time.perf_counter()
    response = client.get(path, headers=headers)
    client_ms = (time.perf_counter() - started) * 1000
    return Exchange(
        config=config,
        path=path,
        status=response.status_code,
        x_cache=response.headers.get("x-cache", ""),
        lab_config=response.headers.get("x-lab-config", ""),
        timing=Timing.parse(response.headers["server-timing"]),
        trace_id=response.headers["traceresponse"].split("-")[1],
        client_ms=client_ms,
    )


# --- expected numbers -----------------------------------------------------------------------------
def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def hit_rate(exchanges: Sequence[Exchange], layer: str) -> float | None:
    outcomes = [e.timing.cache[layer] for e in exchanges if layer in e.timing.cache]
    return outcomes.count("hit") / len(outcomes) if outcomes else None


def front_door(
    exchanges: Sequence[Exchange], edge_rows: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """What the dashboard should show for one configuration at the front door."""
    rows = [edge_rows[e.trace_id] for e in exchanges]
    durations = [float(row["duration_ms"]) for row in rows]
    starts = [int(row["start_ns"]) for row in rows]
    count = len(exchanges)
    return {
        "trace_ids": {e.trace_id for e in exchanges},
        "requests": count,
        "first_ns": min(starts),
        "p50_ms": nearest_rank(durations, 50),
        "p95_ms": nearest_rank(durations, 95),
        "p99_ms": nearest_rank(durations, 99),
        "requests_per_s": count / max(1.0, (max(starts) - min(starts)) / 1e9),
        "error_rate": sum(e.status >= 500 for e in exchanges) / count,
        "statements": mean([e.timing.statements for e in exchanges]),
        "db_ms": mean([e.timing.db_ms for e in exchanges]),
        "ext_ms": mean([e.timing.ext_ms for e in exchanges]),
        "jobs": mean([e.timing.jobs for e in exchanges]),
        **{f"hit_rate_{layer}": hit_rate(exchanges, layer) for layer in ("edge", "redis", "app")},
    }


def list_costs(exchanges: Sequence[Exchange]) -> dict[str, Any] | None:
    """The tour's "per list request" numbers: GET /api/leads that reached the service."""
    reached = [e for e in exchanges if e.path.startswith("/api/leads") and e.reached_service]
    if not reached:
        return None
    return {
        "statements": mean([e.timing.statements for e in reached]),
        "ext_ms": mean([e.timing.ext_ms for e in reached]),
    }


def near(value: float) -> list[float]:
    """The value and its float neighbours: SQL and Python may sum in another order."""
    if value == 0:
        return [value]
    epsilon = 1e-9 * max(1.0, abs(value))
    return [value, value - epsilon, value + epsilon]


def shown_as(format_: Callable[[Any], str | None], value: Any) -> set[str | None]:
    if isinstance(value, float):
        return {format_(candidate) for candidate in near(value)}
    return {format_(value)}


# --- the report -----------------------------------------------------------------------------------
@dataclass
class Report:
    lines: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def check(
        self, page: str, item: str, expected: set[str | None] | str | None, shown: str | None
    ) -> None:
        allowed = expected if isinstance(expected, set) else {expected}
        verdict = "ok" if shown in allowed else "MISMATCH"
        wanted = " | ".join(sorted({str(e) for e in allowed}))
        self.lines.append((page, item, wanted, str(shown), verdict))

    def close(
        self, page: str, item: str, expected: float, shown: str | None, tolerance: float, why: str
    ) -> None:
        """A number shown with more precision than the response reported it (``why``)."""
        try:
            value = float((shown or "").replace(",", "").split()[0])
            verdict = "ok" if abs(value - expected) <= tolerance else "MISMATCH"
        except ValueError:
            verdict = "MISMATCH"
        self.lines.append((page, item, f"{expected:.3f} ±{tolerance} ({why})", str(shown), verdict))

    def untied(self, page: str, item: str, shown: str | None, why: str) -> None:
        self.lines.append((page, item, f"(not tied: {why})", str(shown), "untied"))

    def mismatches(self) -> list[tuple[str, ...]]:
        return [line for line in self.lines if line[4] == "MISMATCH"]

    def print(self) -> None:
        print("\n\nTRUTH REPORT: what the dashboard shows vs what the responses measured")
        page = None
        for line in self.lines:
            if line[0] != page:
                page = line[0]
                print(f"\n== {page}")
            print(f"  [{line[4]:>8}] {line[1]}: expected {line[2]!r}, shown {line[3]!r}")
        print(f"\n{len(self.lines)} numbers, {len(self.mismatches())} mismatches\n")


# --- reading the browser --------------------------------------------------------------------------
def read_cards(scope: Any) -> dict[str, tuple[str, str | None]]:
    """Every ``st.metric`` in ``scope``: label -> (value, delta or None)."""
    out = {}
    for card in scope.locator('[data-testid="stMetric"]').all():
        label = card.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        value = card.locator('[data-testid="stMetricValue"]').inner_text().strip()
        delta = card.locator('[data-testid="stMetricDelta"]')
        out[label] = (value, delta.inner_text().strip() if delta.count() else None)
    return out


def poll(
    read: Callable[[], Any],
    ready: Callable[[Any], bool],
    what: str,
    timeout_s: float = WAIT_S,
    interval_s: float = 0.5,
) -> Any:
    """Read until ``ready``; Streamlit redraws fragments under our feet, so reads may fail."""
    deadline, value = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            value = read()
            if ready(value):
                return value
        except Exception:  # an element detached by a redraw: read again
            pass
        time.sleep(interval_s)
    raise AssertionError(f"{what}: never ready within {timeout_s:.0f} s (last read: {value})")


def read_grid(frame: Any) -> list[dict[str, str]]:
    """An ``st.dataframe``'s rows from its accessible table (header -> raw cell text)."""
    table = frame.locator('table[role="grid"]')
    table.locator("td").first.wait_for(state="attached", timeout=WAIT_S * 1000)
    headers = [cell.text_content() or "" for cell in table.locator("thead th").all()]
    return [
        dict(
            zip(
                headers,
                [cell.text_content() or "" for cell in row.locator("td").all()],
                strict=True,
            )
        )
        for row in table.locator("tbody tr").all()
    ]


def printf_number(format_: str, value: float) -> str:
    return format_ % value


def printf(format_: str, raw: str) -> str:
    """A raw grid value as the column's printf-style format draws it."""
    try:
        return format_ % float(raw)
    except ValueError:
        return raw


# --- the lab --------------------------------------------------------------------------------------
@dataclass
class Lab:
    urls: dict[str, str]
    store: TraceStore

    def toggles(self) -> dict[str, bool]:
        answer: dict[str, bool] = httpx.get(
            f"{self.urls['service']}/admin/toggles", timeout=5
        ).json()["toggles"]
        return answer

    def rows(self, role: str) -> dict[str, dict[str, Any]]:
        found = self.store.recent_requests(limit=1_000_000, role=role)
        return {row["trace_id"]: row for row in found}

    def wait_for_rows(self, exchanges: Sequence[Exchange]) -> None:
        """Until every request's summary rows are in the store (edge, and service if reached)."""

        def missing() -> list[str]:
            edge, service = self.rows(EDGE_ROLE), self.rows(SERVICE_ROLE)
            return [
                e.trace_id
                for e in exchanges
                if e.trace_id not in edge or (e.reached_service and e.trace_id not in service)
            ]

        poll(missing, lambda left: not left, "summary rows of the requests in the trace store")

    def wait_for_jobs(self, expected_finished: int) -> None:
        from rq import Queue

        from latency_lab.service.offload import QUEUE_NAME

        connection = redis.Redis.from_url(self.urls["redis"])
        try:
            queue = Queue(QUEUE_NAME, connection=connection)
            poll(
                lambda: (queue.count, queue.finished_job_registry.count),
                lambda counts: counts == (0, expected_finished),
                "the side-effects queue drained",
            )
        finally:
            connection.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_chromium()
    with latency_lab_up(tmp_path_factory.mktemp("lab"), seed_leads=LEADS) as urls:
        store = TraceStore(urls["trace_store"])
        try:
            yield Lab(urls, store)
        finally:
            store.close()


# --- the pages ------------------------------------------------------------------------------------
LIVE_CARDS: dict[str, tuple[str, Callable[[Any], str], str, int, float]] = {
    # label: (column, format, delta unit, delta digits, delta scale), as views/live.py draws them
    "p50 latency": ("p50_ms", panels.ms, " ms", 1, 1.0),
    "p95 latency": ("p95_ms", panels.ms, " ms", 1, 1.0),
    "p99 latency": ("p99_ms", panels.ms, " ms", 1, 1.0),
    "Requests / s": ("requests_per_s", panels.number, "", 1, 1.0),
    "Error rate": ("error_rate", panels.pct, " pts", 1, 100.0),
    "Statements / request": ("statements", panels.number, "", 1, 1.0),
    "Third-party time / request": ("ext_ms", panels.ms, " ms", 1, 1.0),
    "Edge (CDN) hit rate": ("hit_rate_edge", panels.pct, " pts", 0, 100.0),
    "L1 Redis hit rate": ("hit_rate_redis", panels.pct, " pts", 0, 100.0),
    "L2 app hit rate": ("hit_rate_app", panels.pct, " pts", 0, 100.0),
}


def check_live(
    page: Any,
    lab: Lab,
    report: Report,
    now: dict[str, Any],
    before: dict[str, Any] | None,
    config: str,
) -> None:
    name = f"Live ({configs.short_label(config)})"
    page.goto(lab.urls["dashboard"])
    main = page.locator('[data-testid="stMain"]')
    poll(
        lambda: read_cards(main),
        lambda shown: (
            shown.get("Requests measured", ("",))[0] == f"{now['requests']:,}"
            and f"Now: {configs.short_label(config)}," in main.inner_text()
        ),
        f"{name}: the page reaching this configuration's requests",
    )
    cards = stable_cards(main)
    for label, (column, format_, unit, digits, scale) in LIVE_CARDS.items():
        value, delta = cards.get(label, (None, None))
        report.check(name, label, shown_as(format_, now[column]), value)
        previous = before[column] if before else None
        expected_delta = shown_as(
            functools.partial(_delta, previous=previous, unit=unit, digits=digits, scale=scale),
            now[column],
        )
        report.check(name, f"{label} (delta)", expected_delta, delta)
    report.check(
        name,
        "Requests measured",
        f"{now['requests']:,}",
        cards.get("Requests measured", (None,))[0],
    )
    report.check(
        name,
        "Queue depth (jobs enqueued - jobs finished)",
        "0",
        cards.get("Queue depth", (None,))[0],
    )
    strangers = [
        trace_id
        for trace_id, row in lab.rows(EDGE_ROLE).items()
        if row["config"] == config and trace_id not in now["trace_ids"]
    ]
    report.check(
        name, "edge requests in this configuration the test did not send", "[]", str(strangers)
    )
    report.untied(
        name,
        "Dropped spans",
        cards.get("Dropped spans", (None,))[0],
        "the exporters' own counter, not a request; 0 means no span was lost",
    )
    since = datetime.fromtimestamp(now["first_ns"] / 1e9, tz=UTC).astimezone()
    text = page.locator('[data-testid="stMain"]').inner_text()
    expected = f"Now: {configs.short_label(config)}, since {since:%H:%M:%S}, measured at the edge."
    report.check(
        name,
        "Now: ... since (first request)",
        expected,
        expected if expected in text else _line_with(text, "Now:"),
    )


def stable_cards(main: Any) -> dict[str, tuple[str, str | None]]:
    """The cards once two reads a refresh apart agree: the live fragment redraws every 2 s
    from a query cached for 2 s and shared by every session, so a first read may still be
    half an older snapshot."""
    previous: dict[str, tuple[str, str | None]] | None = None

    def settled() -> bool:
        nonlocal previous
        current = read_cards(main)
        same, previous = current == previous, current
        return same

    poll(settled, bool, "the Live cards settling", interval_s=2.5)
    assert previous is not None
    return previous


def _delta(value: Any, *, previous: Any, unit: str, digits: int, scale: float) -> str | None:
    return panels.delta(value, previous, unit, digits, scale)


def column_format(key: str) -> str | None:
    """The printf-style format of a Compare column (``%.1f``), None for text columns."""
    config: dict[str, Any] = dict(TABLE_COLUMNS[key])
    found = (config.get("type_config") or {}).get("format")
    return str(found) if found else None


def _line_with(text: str, marker: str) -> str | None:
    return next((line for line in text.splitlines() if marker in line), None)


def check_compare(
    page: Any, lab: Lab, report: Report, expected: dict[str, dict[str, Any]], order: Sequence[str]
) -> None:
    page.goto(f"{lab.urls['dashboard']}/compare")
    main = page.locator('[data-testid="stMain"]')
    main.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=WAIT_S * 1000)
    rows = poll(
        lambda: read_grid(main.locator('[data-testid="stDataFrame"]').first),
        lambda rows: len(rows) == len(order),
        "the Compare table's rows",
    )
    base = expected[ALL_OFF]
    headers = {key: column["label"] for key, column in TABLE_COLUMNS.items()}
    report.check(
        "Compare",
        "rows (configurations, oldest first)",
        " / ".join(configs.short_label(c) for c in order),
        " / ".join(row.get(headers["label"], "?") for row in rows),
    )
    for config, row in zip(order, rows, strict=False):
        now, label = expected[config], configs.short_label(config)
        ratio = now["p50_ms"] / base["p50_ms"]
        wanted: dict[str, set[str | None]] = {
            "speedup": {
                f"{1 / ratio:.1f}\u00d7 faster" if ratio < 1 else f"{ratio:.1f}\u00d7 baseline"
            },
            "throughput_vs_baseline": shown_as(
                lambda v: f"{v:.1f}\u00d7", now["requests_per_s"] / base["requests_per_s"]
            ),
            "edge_hits": {panels.pct(now["hit_rate_edge"])},
            "l1_hits": {panels.pct(now["hit_rate_redis"])},
            "l2_hits": {panels.pct(now["hit_rate_app"])},
            "errors": {panels.pct(now["error_rate"])},
        }
        for key in (
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "requests_per_s",
            "statements",
            "ext_ms",
            "requests",
        ):
            wanted[key] = shown_as(
                functools.partial(printf_number, str(column_format(key))), now[key]
            )
        for key, allowed in wanted.items():
            raw = row.get(headers[key])
            format_ = column_format(key)
            shown = printf(format_, raw) if format_ and raw else raw
            report.check("Compare", f"{label}: {headers[key]}", allowed, shown)
    check_article_headline(main, report, base, expected[ALL_ON])
    check_kind_table(main, report, expected, order)


def check_article_headline(
    main: Any, report: Report, old: dict[str, Any], new: dict[str, Any]
) -> None:
    cards = read_cards(main)
    p50 = cards.get("p50, all off \u2192 all on", (None, None))
    report.check(
        "Compare",
        "headline p50, all off -> all on",
        f"{panels.ms(old['p50_ms'])} \u2192 {panels.ms(new['p50_ms'])}",
        p50[0],
    )
    report.check(
        "Compare", "headline p50 change", f"{new['p50_ms'] / old['p50_ms'] - 1:+.1%}", p50[1]
    )
    throughput = cards.get("Throughput", (None, None))
    report.check(
        "Compare",
        "headline throughput",
        shown_as(lambda v: f"{panels.number(v)} requests/s", new["requests_per_s"]),
        throughput[0],
    )
    report.check(
        "Compare",
        "headline throughput vs all off",
        shown_as(lambda v: f"{v:.1f}\u00d7 all off", new["requests_per_s"] / old["requests_per_s"]),
        throughput[1],
    )
    statements = cards.get("Statements per request", (None, None))
    report.check(
        "Compare",
        "headline statements per request",
        shown_as(panels.number, new["statements"]),
        statements[0],
    )
    report.check(
        "Compare",
        "headline statements change",
        shown_as(lambda v: panels.delta(v, old["statements"]), new["statements"]),
        statements[1],
    )


def check_kind_table(
    main: Any, report: Report, expected: dict[str, dict[str, Any]], order: Sequence[str]
) -> None:
    """Where the time went, A (all off, the default) against B (the newest configuration)."""
    frames = main.locator('[data-testid="stDataFrame"]')
    rows = poll(lambda: read_grid(frames.nth(1)), lambda rows: bool(rows), "the Compare kind table")
    by_kind = {row["span kind"]: row for row in rows}
    for side, config in (("A", ALL_OFF), ("B", order[-1])):
        now, name = expected[config], f"kinds {side} ({configs.short_label(config)})"
        database = by_kind.get("database", {})
        report.check(
            "Compare",
            f"{name}: database spans/request = statements/request",
            f"{round(now['statements'], 1):g}",
            database.get(f"spans/request {side}"),
        )
        report.close(
            "Compare",
            f"{name}: database ms/request",
            now["db_ms"],
            database.get(f"ms/request {side}"),
            0.06,
            "Server-Timing db dur, 0.1 ms per request",
        )
        third = by_kind.get("third party", {})
        report.close(
            "Compare",
            f"{name}: third party ms/request",
            now["ext_ms"],
            third.get(f"ms/request {side}", "0"),
            0.06,
            "Server-Timing ext dur, 0.1 ms per request",
        )
        for kind in ("application", "cache", "queue", "background job (off the request path)"):
            if kind in by_kind:
                report.untied(
                    "Compare",
                    f"{name}: {kind} ms/request",
                    by_kind[kind].get(f"ms/request {side}"),
                    "Server-Timing has no such total",
                )


def check_trace(page: Any, lab: Lab, report: Report, exchange: Exchange, what: str) -> None:
    name = f"Trace explorer ({what})"
    page.goto(f"{lab.urls['dashboard']}/trace_explorer")
    box = page.get_by_placeholder("or paste a trace id from a traceresponse header")
    box.fill(exchange.trace_id)
    box.press("Enter")
    page.get_by_role("heading", name=f"Trace {exchange.trace_id}").wait_for(timeout=WAIT_S * 1000)
    main = page.locator('[data-testid="stMain"]')
    spans = lab.store.trace_spans(exchange.trace_id)
    cards = poll(
        lambda: read_cards(main),
        lambda shown: shown.get("Spans", ("",))[0] == f"{len(spans):,}",
        f"{name}: the cards",
    )
    timing, edge = exchange.timing, lab.rows(EDGE_ROLE)[exchange.trace_id]
    report.check(
        name,
        "Duration (the edge's server span)",
        panels.ms(edge["duration_ms"]),
        cards.get("Duration", (None,))[0],
    )
    report.check(
        name,
        "Duration <= client-measured latency",
        "yes",
        "yes"
        if edge["duration_ms"] <= exchange.client_ms
        else f"no: {edge['duration_ms']:.1f} > {exchange.client_ms:.1f}",
    )
    for label, count, total in (
        ("Database", timing.statements, timing.db_ms),
        ("Third party (inline)", timing.ext_calls, timing.ext_ms),
    ):
        shown = cards.get(label, (None,))[0]
        if count:
            report.close(
                name,
                f"{label} (Server-Timing: {count})",
                total,
                shown,
                0.1,
                "Server-Timing dur, rounded to 0.1 ms",
            )
        else:
            report.check(name, f"{label} (Server-Timing: 0)", {"—", "0.0 ms"}, shown)
    report.check(
        name,
        "Spans (the store's spans of this trace)",
        f"{len(spans):,}",
        cards.get("Spans", (None,))[0],
    )
    background = sum(s["duration_ms"] for s in spans if s["name"] == "rq.job")
    report.check(
        name,
        f"Off the request path ({timing.jobs} jobs)",
        panels.ms(background) if timing.jobs else "—",
        cards.get("Off the request path", (None,))[0],
    )
    check_waterfall(page, report, name, timing)


def check_waterfall(page: Any, report: Report, name: str, timing: Timing) -> None:
    legend = set(
        page.locator('[data-testid="stMain"] .js-plotly-plot .legendtext').all_text_contents()
    )
    bars = dict(
        page.evaluate(
            "() => (document.querySelector('[data-testid=\"stMain\"] .js-plotly-plot')"
            "._fullData || []).map(t => [t.name, t._length])"
        )
    )
    report.check(
        name,
        "waterfall: database bars = statements",
        str(timing.statements),
        str(bars.get("database", 0)),
    )
    expected = {
        "database": timing.statements > 0,
        "third party": timing.ext_calls > 0,
        "queue": timing.jobs > 0,
    }
    for kind, present in expected.items():
        report.check(name, f"waterfall legend has {kind!r}", str(present), str(kind in legend))
    report.check(
        name,
        "waterfall legend has 'cache' (a cache was consulted)",
        str(bool(timing.cache)),
        str("cache" in legend),
    )


def check_tour(
    page: Any,
    lab: Lab,
    report: Report,
    expected: dict[str, dict[str, Any]],
    lists: dict[str, dict[str, Any] | None],
) -> None:
    page.goto(f"{lab.urls['dashboard']}/tour")
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text("Live check").wait_for(timeout=WAIT_S * 1000)
    for number in (0, 2, 5):
        step = tour_steps.STEPS[number]
        title = f"{number}. {step.title.split(':')[0]}"
        main.locator('[data-testid="stRadio"]').get_by_text(title, exact=True).click()
        page.get_by_role("heading", name=re.compile(rf"^Step {number} ")).wait_for(
            timeout=WAIT_S * 1000
        )
        wanted = []
        for check in step.checks:
            source = lists if check.route == tour_steps.LIST_ROUTE else expected
            if check.route not in (None, tour_steps.LIST_ROUTE):
                continue  # /api/stats at the service: not sent in a step's configuration pair
            result = tour_steps.evaluate(
                check, source.get(step.previous_config or ""), source.get(step.config)
            )
            wanted.append(f"{result.text} {result.mark}")
        alerts = poll(
            main.locator('[data-testid="stAlert"]').all_inner_texts,
            functools.partial(_holds_all, tuple(wanted)),
            f"tour step {number}: its checks",
            timeout_s=10,
        )
        for line in wanted:
            report.check(
                f"Tour step {number}",
                line.split(":")[0],
                line,
                line if line in alerts else " / ".join(alerts[1:]),
            )
    summary = pd.DataFrame(
        [{**row, "config": config, "trace_ids": None} for config, row in expected.items()]
    )
    journey = tour_steps.journey(summary)
    line = f"The whole journey: {journey.text} {journey.mark}"
    text = main.inner_text()
    report.check(
        "Tour step 5",
        "the whole journey",
        line,
        line if line in text else _line_with(text, "The whole journey"),
    )


def _holds_all(lines: Sequence[str], texts: Sequence[str]) -> bool:
    return all(line in texts for line in lines)


def check_jobs(page: Any, lab: Lab, report: Report, finished: int) -> None:
    page.goto(f"{lab.urls['dashboard']}/jobs")
    main = page.locator('[data-testid="stMain"]')
    cards = poll(
        lambda: read_cards(main), lambda shown: "Finished" in shown, "the Background jobs counts"
    )
    report.check(
        "Background jobs",
        "Finished (sum of Server-Timing queue jobs)",
        f"{finished:,}",
        cards["Finished"][0],
    )
    for label in ("Queued", "Running", "Failed", "Retrying"):
        report.check(
            "Background jobs",
            f"{label} (every job ran, none failed)",
            "0",
            cards.get(label, (None,))[0],
        )


# --- the test -------------------------------------------------------------------------------------
def drive(lab: Lab, config: str, *, pin: bool, before: Sequence[Exchange] = ()) -> list[Exchange]:
    """The configuration's traffic through the edge; back once the store holds it and every
    job enqueued so far has run."""
    with httpx.Client(base_url=lab.urls["edge"], timeout=30) as client:
        exchanges = [send(client, config, path, pin) for path in TRAFFIC[config]]
    lab.wait_for_rows(exchanges)
    lab.wait_for_jobs(sum(e.timing.jobs for e in [*before, *exchanges]))
    return exchanges


def flip_in_sidebar(page: Any, lab: Lab, label: str, toggle: str) -> None:
    from playwright.sync_api import expect

    switch = page.locator('[data-testid="stSidebar"] [data-testid="stCheckbox"]').filter(
        has_text=label
    )
    switch.locator("label").click()
    expect(switch.get_by_role("switch")).to_be_checked(timeout=10_000)
    poll(lab.toggles, lambda toggles: toggles[toggle], f"the lab switching {toggle} on")


def test_every_number_a_person_reads_is_what_the_requests_measured(lab: Lab) -> None:
    from playwright.sync_api import sync_playwright

    report, sent = Report(), {}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT})
        try:
            page.goto(lab.urls["dashboard"])
            page.get_by_text("No requests in this window yet").wait_for(timeout=WAIT_S * 1000)
            assert lab.toggles() == Toggles().model_dump(), "the lab does not start all off"

            sent[ALL_OFF] = drive(lab, ALL_OFF, pin=False)
            expected = {ALL_OFF: front_door(sent[ALL_OFF], lab.rows(EDGE_ROLE))}
            check_live(page, lab, report, expected[ALL_OFF], None, ALL_OFF)

            flip_in_sidebar(page, lab, "Eager loading (fix the N+1)", "eager_loading")
            flip_in_sidebar(page, lab, "Async offload (RQ jobs)", "async_offload")
            time.sleep(1.5)  # every process follows the shared toggles within a second
            sent[EAGER_OFFLOAD] = drive(lab, EAGER_OFFLOAD, pin=False, before=sent[ALL_OFF])
            expected[EAGER_OFFLOAD] = front_door(sent[EAGER_OFFLOAD], lab.rows(EDGE_ROLE))
            check_live(page, lab, report, expected[EAGER_OFFLOAD], expected[ALL_OFF], EAGER_OFFLOAD)

            sent[ALL_ON] = drive(
                lab, ALL_ON, pin=True, before=[*sent[ALL_OFF], *sent[EAGER_OFFLOAD]]
            )
            expected[ALL_ON] = front_door(sent[ALL_ON], lab.rows(EDGE_ROLE))
            everything = [e for exchanges in sent.values() for e in exchanges]
            check_live(page, lab, report, expected[ALL_ON], expected[EAGER_OFFLOAD], ALL_ON)

            check_configurations(report, lab, sent)
            order = [ALL_OFF, EAGER_OFFLOAD, ALL_ON]
            check_compare(page, lab, report, expected, order)
            check_trace(page, lab, report, sent[ALL_OFF][0], "all off, a lazy list")
            check_trace(page, lab, report, sent[EAGER_OFFLOAD][0], "eager + offload, a list")
            miss = next(e for e in sent[ALL_ON] if e.x_cache == "MISS")
            check_trace(page, lab, report, miss, "all on, a list the edge looked up and forwarded")
            hit = next(e for e in sent[ALL_ON] if e.x_cache == "HIT")
            check_trace(page, lab, report, hit, "all on, an edge hit")
            lists = {config: list_costs(exchanges) for config, exchanges in sent.items()}
            check_tour(page, lab, report, expected, lists)
            check_jobs(page, lab, report, sum(e.timing.jobs for e in everything))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "truth-failure.png"))
            raise
        finally:
            report.print()
            browser.close()

    assert not report.mismatches(), (
        "the dashboard shows numbers the requests did not measure:\n"
        + "\n".join(
            f"  {page}: {item}: expected {want!r}, shown {shown!r}"
            for page, item, want, shown, _ in report.mismatches()
        )
    )


def check_configurations(report: Report, lab: Lab, sent: dict[str, list[Exchange]]) -> None:
    """One request, one configuration: asked for, answered (X-Lab-Config), recorded (edge and
    service rows), and the article's shape."""
    edge, service = lab.rows(EDGE_ROLE), lab.rows(SERVICE_ROLE)
    for config, exchanges in sent.items():
        name = f"Requests ({configs.short_label(config)})"
        report.check(
            name,
            "X-Lab-Config of every response",
            config,
            " / ".join(sorted({e.lab_config for e in exchanges})),
        )
        report.check(
            name,
            "the edge's recorded configuration",
            config,
            " / ".join(sorted({edge[e.trace_id]["config"] for e in exchanges})),
        )
        reached = [e for e in exchanges if e.reached_service]
        report.check(
            name,
            "the service's recorded configuration",
            config,
            " / ".join(sorted({service[e.trace_id]["config"] for e in reached})),
        )
        report.check(
            name,
            "statements recorded = statements reported",
            "yes",
            "yes"
            if all(service[e.trace_id]["db_statements"] == e.timing.statements for e in reached)
            else "no",
        )
    lazy = [e.timing.statements for e in sent[ALL_OFF] if e.path == LIST]
    report.check(
        "Requests (all off)",
        "statements per list request (1 + 3N)",
        str(LAZY_STATEMENTS),
        " / ".join(sorted({str(n) for n in lazy})),
    )
