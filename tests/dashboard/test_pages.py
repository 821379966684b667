"""Every page of the dashboard, run with Streamlit's AppTest on a seeded trace store.

The store holds a workshop's first minutes (all off, then eager loading, then everything on);
the stand-in lab answers the admin API. The tests read what a user would read: metric values,
table rows, the checks of the tour, the messages when a part of the lab is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from streamlit.testing.v1 import AppTest

from dashboard import data
from service.offload import QUEUE_NAME
from service.redis_server import free_port
from tests.dashboard.conftest import LIST_STATEMENTS, FakeLab
from tests.dashboard.factories import Workshop, delivered, refused

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
    assert "def _strategy(" in sources

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
