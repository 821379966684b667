"""The trace explorer's profile: beside the waterfall, from the store, or one click to take one."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from latency_lab.core.toggles import Toggles
from latency_lab.telemetry.profiles import Profile, profiling
from latency_lab.telemetry.store import TraceStore, profiles_table
from tests.dashboard.conftest import PROFILED_TRACE, FakeLab
from tests.dashboard.factories import Workshop

OpenPage = Callable[[str], AppTest]


def _work() -> None:
    sorted(str(i) for i in range(200_000))


def _store_profile(store_url: str, trace_id: str) -> Profile:
    with profiling("GET /api/leads") as run:
        _work()
    assert run.profile is not None
    store = TraceStore(store_url).create()
    row = {
        "trace_id": trace_id,
        "span_id": "a" * 16,
        "service": "latency-lab-service",
        "name": "GET /api/leads",
        "start_ns": time.time_ns(),
        "document": run.profile.dumps(),
    }
    with store.engine.begin() as connection:
        connection.execute(insert(profiles_table), [row])
    store.close()
    return run.profile


def test_a_profiled_trace_shows_its_profile_beside_the_waterfall(
    recorded: Workshop, store_url: str, lab_env: FakeLab, open_page: OpenPage
) -> None:
    profile = _store_profile(store_url, recorded.lazy_list)

    app = open_page("trace_explorer")

    assert app.subheader[0].value == f"Trace `{recorded.lazy_list}`"
    assert "Where the application time went (profile)" in [h.value for h in app.subheader]
    (expander,) = [e for e in app.expander if "ms profiled" in e.label]
    assert expander.label == (
        f"latency-lab-service: the request ({profile.duration_ms:,.1f} ms profiled)"
    )
    top = app.dataframe[-1].value
    expected = profile.self_times()[:15]
    assert top["function"].tolist() == [f.name for f in expected]
    assert top["self_ms"].round(6).tolist() == [round(f.self_ms, 6) for f in expected]
    assert len(app.get("plotly_chart")) >= 3  # the waterfall, the icicle, time by code


def test_an_unprofiled_get_offers_to_profile_the_next_one_in_a_chosen_configuration(
    recorded: Workshop, lab_env: FakeLab, open_page: OpenPage
) -> None:
    app = open_page("trace_explorer")
    assert "This request was not profiled" in "\n".join(c.value for c in app.caption)

    eager = Toggles(eager_loading=True).label()
    app.selectbox(key="profile_config").set_value(eager).run()
    next(b for b in app.button if b.label.startswith("Profile the next GET")).click().run()

    assert lab_env.profiled == [("/api/leads", eager)]
    assert app.query_params["trace"] == PROFILED_TRACE
