"""Page sections several pages share: problems and empty states, the switches, the load panel,
the world's sliders, the time window, and number formatting.

Each function draws one section with Streamlit and gets its data from
:mod:`latency_lab.dashboard.data`; pages call them to arrange the screen. Errors from the data layer
are shown as a short message with what to do, never as a traceback.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec

import streamlit as st

from latency_lab.core.toggles import ARTICLE_ORDER, Toggle
from latency_lab.core.world import World
from latency_lab.dashboard import data
from latency_lab.lab.loadgen import DEFAULT_MIX, Endpoint

log = logging.getLogger("dashboard")
P = ParamSpec("P")
WINDOWS = {300: "5 min", 900: "15 min", 3600: "1 hour", 21600: "6 hours", 86400: "24 hours"}
DEFAULT_WINDOW_S = 900
TOGGLE_TEXT: dict[Toggle, tuple[str, str]] = {
    Toggle.EAGER_LOADING: (
        "Eager loading (fix the N+1)",
        "Off: 1 + 3N statements for N leads (owner, tags, metadata loaded lazily). "
        "On: one statement (the database builds the JSON; the article's JOIN with "
        "X-Lab-Loader: joined).",
    ),
    Toggle.ASYNC_OFFLOAD: (
        "Async offload (RQ jobs)",
        "Off: email, analytics and enrichment calls wait inline in the request. "
        "On: they are enqueued and run by RQ workers.",
    ),
    Toggle.REDIS_CACHE: (
        "L1: Redis cache",
        "Cache-aside in Redis for hot reads (TTL 300 s), invalidated on writes.",
    ),
    Toggle.APP_CACHE: (
        "L2: app cache",
        "In-process cache of computed results (stats), invalidated across processes.",
    ),
    Toggle.EDGE_CACHE: (
        "CDN: edge cache",
        "The edge serves static files and public GETs from its HTTP cache.",
    ),
}
TRAFFIC: dict[str, dict[Endpoint, float] | None] = {
    "Realistic mix": dict(DEFAULT_MIX),
    "Lead list only (the N+1 page)": {Endpoint.LIST: 1},
    "Reads only": {Endpoint.LIST: 5, Endpoint.DETAIL: 3, Endpoint.STATS: 1, Endpoint.STATIC: 1},
    "Creates only (side effects)": {Endpoint.CREATE: 1},
    "Custom": None,
}
NO_TRAFFIC = (
    "No requests in this window yet. Start some load with **Drive load** in the sidebar "
    "(or `latency-lab load` in a terminal) and this page fills in within seconds."
)


# --- problems and empty states -------------------------------------------------------------------
def show_problem(error: data.DashboardError) -> None:
    """What is wrong and what to do, as a warning box."""
    text = f"**{error.title}.** {error.message}"
    st.warning(f"{text}\n\n{error.hint}" if error.hint else text, icon=":material/warning:")


@contextmanager
def reporting_problems() -> Iterator[None]:
    """Run a section; a :class:`~latency_lab.dashboard.data.DashboardError` ends it with a clear
    message, anything unexpected with a one-line error (the traceback goes to the server's log)."""
    try:
        yield
    except data.DashboardError as error:
        show_problem(error)
    except Exception:
        log.exception("dashboard section failed")
        st.error(
            "This part of the page hit an unexpected error; the details are in the "
            "dashboard's log (LAB_VAR_DIR/log/dashboard.log under `latency-lab up`).",
            icon=":material/error:",
        )


def guarded(section: Callable[P, None]) -> Callable[P, None]:
    """The section, run inside :func:`reporting_problems`: for fragments, which rerun on their
    own, outside the page's error handling."""

    @functools.wraps(section)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with reporting_problems():
            section(*args, **kwargs)

    return run


def no_traffic(message: str = NO_TRAFFIC) -> None:
    st.info(message, icon=":material/hourglass_empty:")


# --- formatting ----------------------------------------------------------------------------------
def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def ms(value: Any) -> str:
    if missing(value):
        return "—"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:,.1f} ms"


def pct(value: Any) -> str:
    return "—" if missing(value) else f"{value:.0%}"


def number(value: Any, digits: int = 1) -> str:
    return "—" if missing(value) else f"{value:,.{digits}f}"


def delta(
    current: Any, previous: Any, unit: str = "", digits: int = 1, scale: float = 1.0
) -> str | None:
    """``+12.3 ms``-style change for ``st.metric``; ``None`` when either side is unknown or
    nothing changed (a zero change would still get a coloured arrow)."""
    if missing(current) or missing(previous):
        return None
    change = (float(current) - float(previous)) * scale
    if round(change, digits) == 0:
        return None
    return f"{change:+,.{digits}f}{unit}"


# --- the time window -----------------------------------------------------------------------------
def window_picker() -> int:
    """The sidebar's window selector; every page reads the same choice."""
    choice = st.selectbox(
        "Time window",
        list(WINDOWS),
        index=list(WINDOWS).index(DEFAULT_WINDOW_S),
        format_func=WINDOWS.__getitem__,
        key="window_s",
        help="Which requests the charts and tables include, counted back from now.",
    )
    return int(choice)


def selected_window() -> int:
    return int(st.session_state.get("window_s", DEFAULT_WINDOW_S))


# --- the switches --------------------------------------------------------------------------------
def _toggle_key(toggle: Toggle) -> str:
    return f"toggle_{toggle.value}"


def _flip(toggle: Toggle) -> None:
    """Widget callback: send the new position to every service process."""
    try:
        data.set_toggles({toggle.value: bool(st.session_state[_toggle_key(toggle)])})
        st.session_state.pop("toggle_problem", None)
    except data.DashboardError as error:
        st.session_state["toggle_problem"] = error


def toggle_switches() -> None:
    """The five optimizations as switches showing the live state of the service."""
    st.markdown("**Switches**")
    try:
        live = data.toggles()
    except data.DashboardError as error:
        show_problem(error)
        return
    for toggle in ARTICLE_ORDER:
        label, help_text = TOGGLE_TEXT[toggle]
        st.session_state[_toggle_key(toggle)] = live.enabled(toggle)
        st.toggle(label, key=_toggle_key(toggle), help=help_text, on_change=_flip, args=(toggle,))
    problem = st.session_state.pop("toggle_problem", None)
    if problem is not None:
        show_problem(problem)
    st.caption("Every service process follows these within a second.")


# --- drive load ----------------------------------------------------------------------------------
def _start_load() -> None:
    state = st.session_state
    mix = TRAFFIC[state["load_traffic"]] or {
        endpoint: float(state.get(f"load_weight_{endpoint.value}", 0)) for endpoint in Endpoint
    }
    rate = float(state["load_rate"])
    try:
        data.start_load(
            requests=int(state["load_requests"]),
            concurrency=int(state["load_concurrency"]),
            rate_per_s=rate if rate > 0 else None,
            mix=mix,
        )
        state.pop("load_problem", None)
    except data.DashboardError as error:
        state["load_problem"] = error


def _stop_load() -> None:
    data.stop_load()


def load_panel() -> None:
    """Start and stop the load generator, and follow its progress."""
    st.radio(
        "Traffic",
        list(TRAFFIC),
        key="load_traffic",
        help="Which endpoints the requests go to. The lead list is where the N+1 lives.",
    )
    if st.session_state.get("load_traffic") == "Custom":
        for endpoint in Endpoint:
            st.slider(
                f"{endpoint.value} weight",
                0,
                100,
                int(DEFAULT_MIX[endpoint]),
                key=f"load_weight_{endpoint.value}",
            )
    st.number_input(
        "Requests", min_value=1, max_value=100_000, value=200, step=50, key="load_requests"
    )
    st.slider(
        "Concurrency",
        min_value=1,
        max_value=32,
        value=4,
        key="load_concurrency",
        help="Requests in flight at once (worker threads of the generator).",
    )
    st.number_input(
        "Rate limit (requests/s, 0 = as fast as possible)",
        min_value=0.0,
        max_value=5_000.0,
        value=0.0,
        step=10.0,
        key="load_rate",
    )
    running = data.load_status().running
    start, stop = st.columns(2)
    start.button(
        "Start",
        type="primary",
        on_click=_start_load,
        disabled=running,
        icon=":material/play_arrow:",
        width="stretch",
    )
    stop.button(
        "Stop", on_click=_stop_load, disabled=not running, icon=":material/stop:", width="stretch"
    )
    problem = st.session_state.pop("load_problem", None)
    if problem is not None:
        show_problem(problem)
    st.fragment(run_every=1.0 if running else None)(load_progress)()


@guarded
def load_progress() -> None:
    """Progress of the current (or last) run, from the responses' own ``Server-Timing``."""
    status = data.load_status()
    if status.running:
        st.session_state["load_seen_running"] = True
    elif st.session_state.pop("load_seen_running", False):
        st.rerun()  # the run ended: redraw the panel so Start is enabled again
    if not status.started:
        st.caption(f"Sends requests to the edge ({data.settings().edge_url}).")
        return
    state = "running" if status.running else ("stopped" if status.stopped else "finished")
    st.progress(
        status.progress,
        text=f"Run {status.run}: {status.done}/{status.total} requests, "
        f"{state} ({status.elapsed_s:.0f} s)",
    )
    summary = status.summary
    if summary:
        st.markdown(
            f"p50 **{ms(summary.get('p50_ms'))}** · p95 {ms(summary.get('p95_ms'))}  \n"
            f"**{number(summary.get('requests_per_s'))}** requests/s · "
            f"errors {summary.get('errors', 0)}  \n"
            f"Statements / request: **{number(summary.get('statements_per_request'))}**"
        )


# --- the simulated world -------------------------------------------------------------------------
WORLD_PRESETS: dict[str, dict[str, Any]] = {
    "The article's world": World().model_dump(),
    "Fast world (quick demos)": {
        "db_round_trip_ms": 0.1,
        **{
            p: {"latency_ms": 5.0, "jitter_ms": 1.0, "failure_rate": 0.0}
            for p in ("email", "analytics", "enrichment")
        },
    },
    "Flaky providers (20% failures)": {
        p: {"failure_rate": 0.2} for p in ("email", "analytics", "enrichment")
    },
}


def _apply_world(changes: dict[str, Any]) -> None:
    try:
        data.set_world(changes)
        st.session_state["world_applied"] = True
    except data.DashboardError as error:
        st.session_state["world_problem"] = error


def world_form(live: World) -> None:
    """Sliders for the database round trip and each provider, applied together."""
    with st.form("world"):
        db = st.slider(
            "Database round trip per statement (ms)",
            0.0,
            5.0,
            float(live.db_round_trip_ms),
            step=0.1,
            help="Cross-zone round trips in the public clouds are 0.5-2 ms.",
        )
        columns = st.columns(3)
        changes: dict[str, Any] = {"db_round_trip_ms": db}
        for column, provider in zip(columns, ("email", "analytics", "enrichment"), strict=True):
            current = getattr(live, provider)
            with column:
                st.markdown(f"**{provider.capitalize()}**")
                changes[provider] = {
                    "latency_ms": st.slider(
                        f"{provider} latency (ms)", 0.0, 1000.0, float(current.latency_ms), step=5.0
                    ),
                    "jitter_ms": st.slider(
                        f"{provider} jitter ± (ms)", 0.0, 300.0, float(current.jitter_ms), step=5.0
                    ),
                    "failure_rate": st.slider(
                        f"{provider} failure rate (%)",
                        0,
                        100,
                        round(current.failure_rate * 100),
                        step=5,
                    )
                    / 100,
                }
        if st.form_submit_button("Apply to the lab", type="primary"):
            _apply_world(changes)
            st.rerun()  # redraw the sliders from the lab's new state
    st.markdown("Presets")
    for column, (name, preset) in zip(
        st.columns(len(WORLD_PRESETS)), WORLD_PRESETS.items(), strict=True
    ):
        column.button(name, on_click=_apply_world, args=(preset,), width="stretch")
    _world_feedback()


def _world_feedback() -> None:
    problem = st.session_state.pop("world_problem", None)
    if problem is not None:
        show_problem(problem)
    if st.session_state.pop("world_applied", False):
        st.success(
            "Applied: every process follows the new world within a second.", icon=":material/check:"
        )
