"""Every page of the dashboard, run with Streamlit's AppTest on a seeded trace store.

The store holds a workshop's first minutes (all off, then eager loading, then everything on);
the stand-in lab answers the admin API. The tests read what a user would read: metric values,
table rows, the checks of the tour, the messages when a part of the lab is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from streamlit.testing.v1 import AppTest

from latency_lab.core.toggles import Toggles
from latency_lab.dashboard import data, panels
from latency_lab.lab.redis_server import free_port
from latency_lab.service.offload import QUEUE_NAME
from latency_lab.telemetry.store import TraceStore
from tests.dashboard.conftest import LIST_STATEMENTS, FakeLab
from tests.dashboard.factories import MS, LabTraces, Workshop, delivered, refused

OpenPage = Callable[[str], AppTest]


def metrics(app: AppTest) -> dict[str, Any]:
    return {metric.label: metric for metric in app.metric}


def texts(elements: Any) -> str:
    return "\n".join(str(element.value) for element in elements)


def button(app: AppTest, label: str) -> Any:
    return next(b for b in [*app.button, *app.sidebar.button] if b.label == label)


# --- live ----------------------------------------------------------------------------------------
def test_live_compares_the_current_configuration_with_the_previous(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("live")

    assert "Now: **all on**" in texts(app.markdown)
    assert "previous configuration, **eager**" in texts(app.markdown)
    shown = metrics(app)
    # all on, at the front door: six edge hits (no statements), a list (1), a create (2)
    assert shown["Statements / request"].value == "0.4"
    assert shown["Statements / request"].delta == "-0.6"
    assert shown["Edge (CDN) hit rate"].value == "75%"
    assert shown["Third-party time / request"].value == "0.0 ms"
    assert shown["p50 latency"].value == "1.0 ms"
    assert shown["Requests measured"].value == "8"
    assert shown["Queue depth"].value == "—"  # no Redis in this environment
    assert len(app.get("plotly_chart")) == 3


def test_live_without_traffic_says_how_to_get_some(lab_env: FakeLab, open_page: OpenPage) -> None:
    app = open_page("live")

    assert "No requests in this window yet" in texts(app.info)
    assert "Drive load" in texts(app.info)
    assert not app.get("plotly_chart")


def test_a_switch_on_the_page_changes_the_lab(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("live")
    switch = app.sidebar.toggle(key="toggle_eager_loading")
    assert switch.value is False

    switch.set_value(True).run()

    assert lab_env.puts == [("toggles", {"eager_loading": True})]
    assert lab_env.toggles.eager_loading
    assert app.sidebar.toggle(key="toggle_eager_loading").value is True


def test_service_down_is_a_message_not_a_traceback(
    recorded: Workshop, lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    monkeypatch.setenv("LAB_SERVICE_URL", f"http://127.0.0.1:{free_port()}")

    app = open_page("live")

    warnings = texts(app.sidebar.warning)
    assert "The lead service does not answer" in warnings
    assert "latency-lab up" in warnings
    assert metrics(app)["Statements / request"].value == "0.4"  # the traces still show


def test_admin_token_is_sent_and_a_missing_one_explained(
    recorded: Workshop, lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    lab_env.token = "s3cret"
    refused_app = open_page("live")
    assert "needs the admin token" in texts(refused_app.sidebar.warning)
    assert "LAB_ADMIN_TOKEN" in texts(refused_app.sidebar.warning)

    monkeypatch.setenv("LAB_ADMIN_TOKEN", "s3cret")
    data.settings.clear()
    data.admin_client.clear()
    data.toggles.clear()
    app = open_page("live")
    assert not app.sidebar.warning
    assert app.sidebar.toggle(key="toggle_eager_loading").value is False


def test_trace_store_unreachable_says_what_to_check(
    lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    monkeypatch.setenv("LAB_TRACE_STORE_URL", f"postgresql://lab@127.0.0.1:{free_port()}/traces")

    app = open_page("live")

    assert "The trace store cannot be read" in texts(app.warning)
    assert "LAB_TRACE_STORE_URL" in texts(app.warning)


def test_load_panel_drives_the_front_door_and_reports_progress(
    lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("live")
    app.sidebar.radio(key="load_traffic").set_value("Lead list only (the N+1 page)")
    app.sidebar.number_input(key="load_requests").set_value(20)
    button(app, "Start").click().run()

    status = data.load_runner().wait(timeout_s=20)
    app.run()

    assert status.done == 20 and not status.running
    assert len(lab_env.requests) == 20
    assert all(line.startswith("GET /api/leads") for line in lab_env.requests)
    progress = app.sidebar.get("progress")[0]
    assert progress.value == 100
    assert progress.proto.text.startswith(f"Run {status.run}: 20/20 requests, finished")
    assert f"Statements / request: **{LIST_STATEMENTS}.0**" in texts(app.sidebar.markdown)


# --- compare -------------------------------------------------------------------------------------
def test_compare_lists_every_configuration_with_the_ratio_to_the_baseline(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("compare")

    table = app.dataframe[0].value
    assert table["label"].tolist() == ["all off", "eager", "all on"]
    assert table["statements"].round(2).tolist() == [26.86, 1.0, 0.38]
    assert table["speedup"].iloc[0] == "1.0\u00d7 baseline"
    assert table["speedup"].iloc[1].endswith("\u00d7 faster")
    headline = metrics(app)["p50, all off \u2192 all on"]
    assert headline.value == "97.0 ms \u2192 1.0 ms"
    kinds = app.dataframe[1].value.set_index("span kind")
    assert kinds.loc["database", "spans/request A"] > kinds.loc["database", "spans/request B"]
    assert kinds.loc["background job (off the request path)", "spans/request B"] > 0
    assert len(app.get("plotly_chart")) == 3


# --- trace explorer ------------------------------------------------------------------------------
def test_trace_explorer_opens_the_slowest_request_with_its_n_plus_one(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("trace_explorer")

    assert app.subheader[0].value == f"Trace `{recorded.lazy_list}`"
    findings = texts(app.error)
    assert "N+1 on Lead.owner" in findings and "`joinedload(Lead.owner)`" in findings
    assert "N+1 on Lead.tags" in findings and "`selectinload(Lead.tags)`" in findings
    assert f"{recorded.leads} statements of one shape" in findings
    assert metrics(app)["Spans"].value == f"{LIST_STATEMENTS + 3:,}"
    assert app.get("plotly_chart")


def test_trace_explorer_shows_background_jobs_off_the_request_path(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("trace_explorer")
    app.text_input(key="trace_pasted").input(recorded.offloaded_create).run()

    jobs = app.dataframe[0].value  # the pasted trace replaces the request list
    assert sorted(jobs["func"]) == ["analytics_task", "email_task", "enrichment_task"]
    assert jobs["wait_ms"].tolist() == [30.0, 30.0, 30.0]
    assert (jobs["after_response_ms"] > 0).all()
    assert metrics(app)["Off the request path"].value == "126 ms"
    assert "No N+1 in this request" in texts(app.success)


def test_trace_explorer_unknown_trace_is_explained(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("trace_explorer")
    app.text_input(key="trace_pasted").input("0" * 32).run()

    assert "No spans for trace" in texts(app.warning)


# --- jobs ----------------------------------------------------------------------------------------
def test_jobs_page_counts_registries_and_shows_failures(
    redis_url: str, lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(QUEUE_NAME, connection=connection)
    queue.enqueue(delivered, "email")
    queue.enqueue(delivered, "analytics")
    queue.enqueue(refused, "enrichment")
    SimpleWorker([queue], connection=connection).work(burst=True)
    queue.enqueue(delivered, "email")  # one left waiting: no worker runs now
    monkeypatch.setenv("REDIS_URL", redis_url)

    app = open_page("jobs")

    shown = metrics(app)
    assert shown["Finished"].value == "2"
    assert shown["Failed"].value == "1"
    assert shown["Queued"].value == "1"
    assert shown["Arrivals"].value == "0.1/s"  # 4 jobs in the last 30 s
    assert shown["Completions"].value == "0.1/s"  # 3 done: 2 finished, 1 failed
    assert shown["Expected wait"].value == "10.0 s"  # Little's law: 1 queued / (3 / 30 s)
    assert "Arrivals outrun completions" in texts(app.warning)
    assert "No RQ worker is running" in texts(app.warning)
    failures = app.dataframe[0].value
    assert failures["task"].tolist() == ["refused"]
    assert "ValueError: enrichment answered 503" in failures["error"].iloc[0]


def test_jobs_page_with_redis_gone(
    lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    app = open_page("jobs")

    assert "Redis is not reachable" in texts(app.warning)
    assert "latency-lab up" in texts(app.warning)


# --- guided tour ---------------------------------------------------------------------------------
def test_tour_checks_each_step_against_the_one_before(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("tour")
    app.radio(key="tour_step").set_value(1).run()

    assert app.header[0].value.startswith("Step 1 · Eager loading")
    assert f"statements per list request: {LIST_STATEMENTS} \u2192 1 \u2713" in texts(app.success)
    assert "p50 latency: 97.0 ms \u2192 7.0 ms \u2713" in texts(app.success)
    sources = texts(app.code)
    assert "def loader_options(" in sources and "joinedload(Lead.owner)" in sources
    assert "def choose_strategy(" in sources

    app.radio(key="tour_step").set_value(2).run()
    assert "not measured yet" in texts(app.info)


def test_tour_button_sets_the_step_configuration(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("tour")
    app.radio(key="tour_step").set_value(3).run()
    button(app, "Switch the lab to step 3").click().run()

    assert lab_env.toggles.label() == (
        "eager_loading=on,redis_cache=on,app_cache=off,edge_cache=off,async_offload=on"
    )


# --- simulated world -----------------------------------------------------------------------------
def test_world_sliders_change_the_lab(lab_env: FakeLab, open_page: OpenPage) -> None:
    app = open_page("world")
    app.slider[0].set_value(1.5)
    app.button[0].click().run()  # the form's "Apply to the lab"

    assert lab_env.world.db_round_trip_ms == 1.5
    assert lab_env.world.email.latency_ms == 80.0  # untouched sliders keep the lab's values
    assert "Applied" in texts(app.success)
    assert app.slider[0].value == 1.5


def test_world_preset_applies_at_once(lab_env: FakeLab, open_page: OpenPage) -> None:
    app = open_page("world")
    button(app, "Fast world (quick demos)").click().run()

    assert lab_env.world.db_round_trip_ms == 0.1
    assert lab_env.world.enrichment.latency_ms == 5.0


def test_an_unexpected_failure_is_one_line_not_a_traceback(
    recorded: Workshop, lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    def broken(window_s: int) -> None:
        raise RuntimeError("the store returned nonsense")

    monkeypatch.setattr(data, "time_series", broken)

    app = open_page("live")

    assert "unexpected error" in texts(app.error)
    assert "nonsense" not in texts(app.error)
    assert metrics(app)["Statements / request"].value == "0.4"  # what worked is still shown


# --- every number a page shows, for the workshop's known rows -------------------------------------
# What :func:`tests.dashboard.factories.workshop` recorded, at the front door (the edge's rows).
# A request's edge span lasts 2 ms of framing (edge -> service -> edge), 2 ms before the first
# statement, 3 ms per statement, 21 ms per inline third-party call and 1 ms per enqueue.
def edge_ms(statements: int, inline_calls: int = 0, enqueued: int = 0) -> float:
    return 4.0 + 3.0 * statements + 21.0 * inline_calls + 1.0 * enqueued


LAZY_MS, EAGER_MS = edge_ms(LIST_STATEMENTS), edge_ms(1)
INLINE_CREATE_MS, OFFLOADED_CREATE_MS, EDGE_HIT_MS = edge_ms(2, 3), edge_ms(2, 0, 3), 1.0
WORKSHOP = {
    # configuration: (edge durations, statements, third-party ms, jobs, edge hits, edge misses,
    #                 seconds between the first and the last request)
    "all off": (
        [LAZY_MS] * 6 + [INLINE_CREATE_MS],
        [LIST_STATEMENTS] * 6 + [2],
        [0.0] * 6 + [60.0],
        [0] * 7,
        0,
        0,
        2.0,
    ),
    "eager": ([EAGER_MS] * 6, [1] * 6, [0.0] * 6, [0] * 6, 0, 0, 0.5),
    "all on": (
        [EDGE_HIT_MS] * 6 + [EAGER_MS, OFFLOADED_CREATE_MS],
        [0] * 6 + [1, 2],
        [0.0] * 8,
        [0] * 7 + [3],
        6,
        2,
        0.4,
    ),
}


def expected_row(label: str) -> dict[str, Any]:
    from latency_lab.telemetry.percentiles import nearest_rank

    durations, statements, ext, jobs, hits, misses, seconds = WORKSHOP[label]
    count = len(durations)
    return {
        "requests": count,
        "p50_ms": nearest_rank(durations, 50),
        "p95_ms": nearest_rank(durations, 95),
        "p99_ms": nearest_rank(durations, 99),
        "requests_per_s": count / max(1.0, seconds),
        "error_rate": 0.0,
        "statements": sum(statements) / count,
        "ext_ms": sum(ext) / count,
        "jobs": sum(jobs) / count,
        "hit_rate_edge": hits / (hits + misses) if hits + misses else None,
        "hit_rate_redis": None,
        "hit_rate_app": None,
    }


def test_live_cards_are_the_current_configurations_numbers(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    now, before = expected_row("all on"), expected_row("eager")
    app = open_page("live")

    shown = {label: (metric.value, metric.delta or None) for label, metric in metrics(app).items()}
    assert shown == {
        "p50 latency": (
            panels.ms(now["p50_ms"]),
            panels.delta(now["p50_ms"], before["p50_ms"], " ms"),
        ),
        "p95 latency": (
            panels.ms(now["p95_ms"]),
            panels.delta(now["p95_ms"], before["p95_ms"], " ms"),
        ),
        "p99 latency": (
            panels.ms(now["p99_ms"]),
            panels.delta(now["p99_ms"], before["p99_ms"], " ms"),
        ),
        "Requests / s": (
            panels.number(now["requests_per_s"]),
            panels.delta(now["requests_per_s"], before["requests_per_s"]),
        ),
        "Error rate": ("0%", None),
        "Statements / request": (
            panels.number(now["statements"]),
            panels.delta(now["statements"], before["statements"]),
        ),
        "Third-party time / request": ("0.0 ms", None),
        "Edge (CDN) hit rate": (panels.pct(now["hit_rate_edge"]), None),
        "L1 Redis hit rate": ("—", None),
        "L2 app hit rate": ("—", None),
        "Queue depth": ("—", None),  # no Redis in this environment
        "Dropped spans": ("0", None),
        "Jobs in / out": ("—", None),
        "Requests measured": (str(now["requests"]), None),
    }
    # The numbers, spelled out once: what a reader of the closing note can check by hand.
    assert shown["p50 latency"] == ("1.0 ms", "-6.0 ms")
    assert shown["p95 latency"] == ("13.0 ms", "+6.0 ms")
    assert shown["Requests / s"] == ("8.0", "+2.0")
    assert shown["Statements / request"] == ("0.4", "-0.6")
    assert shown["Edge (CDN) hit rate"] == ("75%", None)


def test_live_names_the_configuration_and_the_one_before(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("live")

    text = texts(app.markdown)
    assert "Now: **all on**" in text and "measured at the edge" in text
    assert "previous configuration, **eager** (+offload +L1 +L2 +CDN since)" in text


def test_compare_table_cells_are_each_configurations_numbers(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("compare")

    table = app.dataframe[0].value.set_index("label")
    assert list(table.index) == ["all off", "eager", "all on"]
    base = expected_row("all off")
    for label in table.index:
        row, want = table.loc[label], expected_row(label)
        for column in ("p50_ms", "p95_ms", "p99_ms", "requests_per_s", "statements", "ext_ms"):
            assert f"{row[column]:.1f}" == f"{want[column]:.1f}", (label, column)
        assert int(row["requests"]) == want["requests"], label
        assert row["edge_hits"] == panels.pct(want["hit_rate_edge"]), label
        assert (row["l1_hits"], row["l2_hits"], row["errors"]) == ("—", "—", "0%"), label
        ratio = want["p50_ms"] / base["p50_ms"]
        assert row["speedup"] == (
            f"{1 / ratio:.1f}\u00d7 faster" if ratio < 1 else f"{ratio:.1f}\u00d7 baseline"
        ), label
        throughput = want["requests_per_s"] / base["requests_per_s"]
        assert f"{row['throughput_vs_baseline']:.1f}" == f"{throughput:.1f}", label
    assert table.loc["all off", "p50_ms"] == 97.0 and table.loc["all off", "ext_ms"] == 60 / 7
    assert table.loc["eager", "speedup"] == "13.9\u00d7 faster"
    assert table.loc["all on", "speedup"] == "97.0\u00d7 faster"


def test_compare_headline_is_all_off_against_all_on(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    old, new = expected_row("all off"), expected_row("all on")
    app = open_page("compare")

    shown = metrics(app)
    assert shown["p50, all off \u2192 all on"].value == "97.0 ms \u2192 1.0 ms"
    assert shown["p50, all off \u2192 all on"].delta == f"{1.0 / 97.0 - 1:+.1%}" == "-99.0%"
    assert shown["Throughput"].value == "8.0 requests/s"
    assert (
        shown["Throughput"].delta == f"{new['requests_per_s'] / old['requests_per_s']:.1f}"
        "\u00d7 all off"
    )
    assert shown["Statements per request"].value == "0.4"
    assert shown["Statements per request"].delta == panels.delta(
        new["statements"], old["statements"]
    )


def test_compare_kind_table_counts_spans_per_request(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("compare")

    kinds = app.dataframe[1].value.set_index("span kind")
    all_off, all_on = expected_row("all off"), expected_row("all on")
    # A (all off, the default) against B (the newest, all on): one database span per statement.
    assert kinds.loc["database", "spans/request A"] == round(all_off["statements"], 1)
    assert kinds.loc["database", "spans/request B"] == round(all_on["statements"], 1)
    assert kinds.loc["database", "ms/request A"] == round(all_off["statements"] * 2.5, 2)
    assert kinds.loc["third party", "ms/request A"] == round(all_off["ext_ms"], 2)
    # all on: three jobs in eight requests, each 42 ms in a worker
    background = "background job (off the request path)"
    assert kinds.loc[background, "spans/request B"] == round(3 * 2 / 8, 1)
    assert kinds.loc[background, "ms/request B"] == round(3 * 42 / 8, 2)


@pytest.mark.parametrize(
    ("trace", "cards"),
    [
        (
            "lazy_list",
            {
                "Duration": "97.0 ms",
                "Database": f"{31 * 2.5:.1f} ms",
                "Third party (inline)": "—",
                "Spans": "34",
                "Off the request path": "—",
            },
        ),
        (
            "inline_create",
            {
                "Duration": "73.0 ms",
                "Database": "5.0 ms",
                "Third party (inline)": "60.0 ms",
                "Spans": "8",
                "Off the request path": "—",
            },
        ),
        (
            "offloaded_create",
            {
                "Duration": "13.0 ms",
                "Database": "5.0 ms",
                "Third party (inline)": "—",
                "Spans": "14",
                "Off the request path": "126 ms",
            },
        ),
    ],
)
def test_trace_explorer_cards_are_the_traces_numbers(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage, trace: str, cards: dict[str, str]
) -> None:
    """Duration: the front door's span; database: 2.5 ms per statement; third party: 20 ms per
    inline call; spans: edge, its client, service, one per statement, call, enqueue and job."""
    app = open_page("trace_explorer")
    app.text_input(key="trace_pasted").input(getattr(recorded, trace)).run()

    assert {label: metric.value for label, metric in metrics(app).items()} == cards


def test_trace_explorer_waterfall_kinds_match_the_trace(
    recorded: Workshop, lab_env: FakeLab
) -> None:
    detail = data.trace_detail(recorded.lazy_list)

    kinds = detail.waterfall.groupby("kind").size().to_dict()
    assert kinds == {"database": LIST_STATEMENTS, "application": 3}
    assert detail.by_kind.set_index("kind")["time_ms"]["database"] == LIST_STATEMENTS * 2.5


def test_tour_checks_show_the_measured_numbers(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("tour")
    assert f"statements per list request: {LIST_STATEMENTS} \u2713" in texts(app.success)
    assert "p50 latency: 97.0 ms \u2713" in texts(app.success)

    app.radio(key="tour_step").set_value(5).run()

    assert "edge hit rate: 75% \u2713" in texts(app.success)
    assert "p50 latency: 1.0 ms (measure the step before to compare) \u2026" in texts(app.info)
    assert (
        "**The whole journey:** p50, all off \u2192 all on: 97.0 ms \u2192 1.0 ms \u2713"
        in texts(app.markdown)
    )


def test_jobs_page_shows_every_registry(
    redis_url: str, lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    connection = redis.Redis.from_url(redis_url)
    queue = Queue(QUEUE_NAME, connection=connection)
    for provider in ("email", "analytics", "enrichment"):
        queue.enqueue(delivered, provider)
    SimpleWorker([queue], connection=connection).work(burst=True)
    monkeypatch.setenv("REDIS_URL", redis_url)

    app = open_page("jobs")

    assert {label: metric.value for label, metric in metrics(app).items()} == {
        "Queued": "0",
        "Running": "0",
        "Finished": "3",
        "Failed": "0",
        "Retrying": "0",
        "Arrivals": "0.1/s",  # 3 jobs in the last 30 s
        "Completions": "0.1/s",
        "Expected wait": "0.0 s",
        "Slots busy": "0 of 0",
    }
    assert "Keeping up: 0.1 jobs/s arrive, 0.1/s complete; nothing waits." in texts(app.caption)
    assert "No failed jobs" in texts(app.caption)


# --- empty states: each says what to do -----------------------------------------------------------
def test_compare_without_traffic_says_how_to_get_some(
    lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("compare")

    assert "No requests in this window yet" in texts(app.info)
    assert "Drive load" in texts(app.info)
    assert not app.dataframe


def test_compare_with_one_configuration_says_to_flip_a_switch(
    store_url: str, lab_env: FakeLab, open_page: OpenPage
) -> None:
    store = TraceStore(store_url).create()
    traces = LabTraces()
    traces.list_request(time.time_ns() - 60_000 * MS, Toggles(), leads=3)
    traces.write(store)
    store.close()

    app = open_page("compare")

    info = texts(app.info)
    assert "Measure both **all off** and **all on**" in info
    assert "Only one configuration so far: flip a switch and drive some load" in info
    assert app.dataframe[0].value["label"].tolist() == ["all off"]


def test_trace_explorer_without_traffic_says_how_to_get_some(
    lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("trace_explorer")

    assert "No requests in this window yet" in texts(app.info)
    assert not app.get("plotly_chart")


def test_trace_not_arrived_says_it_will(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("trace_explorer")
    app.text_input(key="trace_pasted").input("f" * 32).run()

    warning = texts(app.warning)
    assert f"No spans for trace `{'f' * 32}` in the store (yet)" in warning
    assert "spans arrive within a second or two" in warning


def test_trace_without_jobs_says_so(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("trace_explorer")
    app.text_input(key="trace_pasted").input(recorded.inline_create).run()

    assert "This request enqueued no jobs" in texts(app.caption)


def test_tour_without_traffic_says_what_is_not_measured(
    lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("tour")

    info = texts(app.info)
    assert "statements per list request: not measured yet in this configuration" in info
    assert "p50 latency: not measured yet in this configuration" in info
    assert "Switch the lab to step 0" in [b.label for b in app.button]


def test_jobs_page_without_jobs_says_what_to_do(
    redis_url: str, lab_env: FakeLab, monkeypatch: pytest.MonkeyPatch, open_page: OpenPage
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)

    app = open_page("jobs")

    assert {metric.value for metric in app.metric} == {"0", "0.0/s", "0.0 s", "0 of 0"}
    assert "No jobs in the last 30 s." in texts(app.caption)
    assert "No RQ worker is running" in texts(app.warning)
    assert "--rq-workers" in texts(app.warning)
    assert "Raise a provider's failure rate" in texts(app.caption)
    chart = app.get("plotly_chart")[0].proto.spec
    assert "No finished jobs yet (switch async_offload on and drive some load)" in chart
