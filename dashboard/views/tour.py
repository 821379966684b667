"""Guided tour: the article's story, one switch at a time, checked live.

For workshops: each step says what changes and what to look for, shows the code the switch
selects (read from the service's own source), can set the lab to the step's configuration and
send the traffic that shows it, and checks the result against the step before.
"""

from __future__ import annotations

import streamlit as st

from latency_lab.dashboard import configs, data, panels, tour_steps

REFRESH_S = 2.0
STEP_TRAFFIC_REQUESTS = 200


def _apply(step: tour_steps.TourStep) -> None:
    toggles = configs.cumulative(step.number)
    try:
        data.set_toggles(toggles.model_dump())
    except data.DashboardError as error:
        st.session_state["tour_problem"] = error


def _send_traffic(step: tour_steps.TourStep) -> None:
    mix = panels.TRAFFIC[step.traffic] or {}
    try:
        data.start_load(requests=STEP_TRAFFIC_REQUESTS, concurrency=4, rate_per_s=None, mix=mix)
    except data.DashboardError as error:
        st.session_state["tour_problem"] = error


def actions(step: tour_steps.TourStep) -> None:
    left, right = st.columns(2)
    left.button(
        f"Switch the lab to step {step.number}",
        on_click=_apply,
        args=(step,),
        icon=":material/toggle_on:",
        width="stretch",
        help="Sets all five switches to this step's configuration.",
    )
    right.button(
        f"Send {STEP_TRAFFIC_REQUESTS} requests: {step.traffic}",
        on_click=_send_traffic,
        args=(step,),
        icon=":material/send:",
        width="stretch",
        disabled=data.load_status().running,
    )
    problem = st.session_state.pop("tour_problem", None)
    if problem is not None:
        panels.show_problem(problem)


@panels.guarded
def checks(step: tour_steps.TourStep) -> None:
    """The step's checks against the previous configuration, refreshed live."""
    window_s = panels.selected_window()
    for check in step.checks:
        summary = (
            data.route_costs(window_s, check.route, check.method)
            if check.route and check.method
            else data.config_summary(window_s, check.route)
        )
        result = tour_steps.evaluate(
            check,
            tour_steps.row_for(summary, step.previous_config),
            tour_steps.row_for(summary, step.config),
        )
        show = {True: st.success, False: st.error, None: st.info}[result.passed]
        show(f"{result.text} {result.mark}")
    if step.number == len(tour_steps.STEPS) - 1:
        result = tour_steps.journey(data.config_summary(window_s))
        st.markdown(
            f"**The whole journey:** {result.text} {result.mark} (the article: 500 ms → 50 ms)"
        )
    st.caption(
        f"Measured in this step's configuration ({configs.short_label(step.config)})"
        " against the previous one, over the selected time window."
    )


def code(step: tour_steps.TourStep) -> None:
    st.markdown("**The code this switch selects**")
    for target in step.code:
        module, _, name = target.partition(":")
        st.caption(f"`{module.replace('.', '/')}.py` · `{name}`")
        st.code(data.source_of(target), language="python")


def main() -> None:
    st.title("Guided tour")
    st.caption("From 500 ms to 50 ms, one optimization at a time, as the article tells it.")
    titles = [f"{step.number}. {step.title.split(':')[0]}" for step in tour_steps.STEPS]
    chosen = st.radio(
        "Step",
        range(len(tour_steps.STEPS)),
        format_func=titles.__getitem__,
        horizontal=True,
        key="tour_step",
        label_visibility="collapsed",
    )
    step = tour_steps.STEPS[int(chosen or 0)]
    st.header(f"Step {step.number} · {step.title}")
    st.markdown(step.story)
    st.info(f"**What to look for.** {step.look_for}", icon=":material/visibility:")
    actions(step)
    st.subheader("Live check")
    st.fragment(run_every=REFRESH_S)(checks)(step)
    code(step)


if __name__ == "__main__":
    main()
