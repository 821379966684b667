"""Trace explorer: pick a request (slowest first) and see where its time went.

The waterfall nests every span under its parent and colours it by kind; the N+1's repeated
statements share one row, outlined in red, with the ORM relationship and the fix. Jobs the
request enqueued appear with their time in the queue and how long after the response they ran.
A trace id from a response's ``traceresponse`` header can be pasted (or given as ``?trace=``).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from latency_lab.dashboard import configs, data, figures, panels
from latency_lab.telemetry.nplusone import Finding

REQUEST_COLUMNS = {
    "time": st.column_config.DatetimeColumn("Time", format="HH:mm:ss"),
    "request": st.column_config.TextColumn("Request", width="large"),
    "status": st.column_config.NumberColumn("Status", format="%d"),
    "duration_ms": st.column_config.NumberColumn("Duration (ms)", format="%.1f"),
    "statements": st.column_config.NumberColumn("Statements", format="%d"),
    "ext_ms": st.column_config.NumberColumn("3rd-party (ms)", format="%.1f"),
    "jobs": st.column_config.NumberColumn("Jobs", format="%d"),
    "n_plus_one": st.column_config.NumberColumn(
        "N+1", format="%d", help="N+1 findings in this request"
    ),
    "configuration": st.column_config.TextColumn("Configuration"),
}
JOB_COLUMNS: dict[str, Any] = {
    "func": "Task",
    "queue": "Queue",
    "wait_ms": st.column_config.NumberColumn("In the queue (ms)", format="%.1f"),
    "run_ms": st.column_config.NumberColumn("Running (ms)", format="%.1f"),
    "after_response_ms": st.column_config.NumberColumn(
        "Ended after the response (ms)", format="%.1f"
    ),
    "status": "Status",
}


def choose_request(window_s: int) -> str | None:
    """The trace to show: pasted, linked (``?trace=``), selected in the table, or the first."""
    order = st.radio(
        "Order",
        ["Slowest first", "Newest first"],
        horizontal=True,
        key="trace_order",
        label_visibility="collapsed",
    )
    requests = data.request_list(window_s, slowest=order == "Slowest first")
    pasted = (
        st.text_input(
            "Trace id",
            value=st.query_params.get("trace", ""),
            placeholder="or paste a trace id from a traceresponse header",
            key="trace_pasted",
            label_visibility="collapsed",
        )
        .strip()
        .lower()
    )
    if pasted:
        return pasted
    if requests.empty:
        panels.no_traffic()
        return None
    picked = st.dataframe(
        requests,
        column_order=list(REQUEST_COLUMNS),
        column_config=REQUEST_COLUMNS,
        hide_index=True,
        height=260,
        on_select="rerun",
        selection_mode="single-row",
        key="request_table",
    )
    rows = picked.selection.rows if picked is not None and hasattr(picked, "selection") else []
    st.caption("Requests that reached the service. Select a row to see its trace.")
    return str(requests.iloc[rows[0] if rows else 0]["trace_id"])


def findings(found: list[Finding]) -> None:
    if not found:
        st.success("No N+1 in this request.", icon=":material/check_circle:")
        return
    for finding in found:
        what = finding.relationship or "the same statement"
        unit = "calls" if finding.kind == "n_plus_one_api" else "statements"
        st.error(
            f"**N+1 on {what}**: {finding.count} {unit} of one shape "
            f"({finding.total_ms:.1f} ms in total). **Fix:** `{finding.fix}`",
            icon=":material/repeat:",
        )
    with st.expander("Statement shapes"):
        for finding in found:
            st.code(finding.shape, language="sql", wrap_lines=True)


def summary(detail: data.TraceDetail) -> None:
    on_path = detail.spans[~detail.spans["off_path"]] if not detail.spans.empty else detail.spans
    servers = on_path[on_path["kind"] == "SERVER"]
    duration = float(servers["duration_ms"].max()) if not servers.empty else None
    kinds = detail.by_kind.set_index("kind")["time_ms"] if not detail.by_kind.empty else {}
    columns = st.columns(5)
    columns[0].metric("Duration", panels.ms(duration), border=True)
    columns[1].metric("Database", panels.ms(kinds.get("database")), border=True)
    columns[2].metric("Third party (inline)", panels.ms(kinds.get("third_party")), border=True)
    columns[3].metric("Spans", f"{len(detail.spans):,}", border=True)
    background = detail.jobs["run_ms"].sum() if not detail.jobs.empty else None
    columns[4].metric(
        "Off the request path",
        panels.ms(background),
        border=True,
        help="Time the request's background jobs ran in workers.",
    )


def jobs(detail: data.TraceDetail) -> None:
    st.subheader("Background jobs")
    if detail.jobs.empty:
        st.caption("This request enqueued no jobs (or they have not run yet).")
        return
    st.dataframe(detail.jobs, column_config=JOB_COLUMNS, hide_index=True, key="trace_jobs")
    st.caption(
        "Their spans are in the same trace: the enqueue carried the trace context into "
        "the worker. They ran after the response, off the request path."
    )


def show(trace_id: str) -> None:
    detail = data.trace_detail(trace_id)
    if detail.spans.empty:
        st.warning(
            f"No spans for trace `{trace_id}` in the store (yet): spans arrive within "
            "a second or two, and old traces are trimmed by retention.",
            icon=":material/search_off:",
        )
        return
    st.subheader(f"Trace `{trace_id}`")
    summary(detail)
    findings(detail.findings)
    st.plotly_chart(figures.waterfall(detail.waterfall), key="waterfall")
    st.caption(
        "Spans nested under their parents and coloured by kind; repeated statements of "
        "one shape share a row (\u00d7N), outlined in red when they are an N+1."
    )
    jobs(detail)
    profiles(trace_id)


PROFILE_COLUMNS: dict[str, Any] = {
    "function": "Function",
    "where": "Where",
    "group": "Code",
    "self_ms": st.column_config.NumberColumn("Self (ms)", format="%.2f"),
    "share": st.column_config.ProgressColumn("Share", format="percent", min_value=0, max_value=1),
}


def profiles(trace_id: str) -> None:
    """The request's profile beside its trace (and its jobs'), or a way to take one."""
    st.subheader("Where the application time went (profile)")
    found = data.trace_profiles(trace_id)
    if not found:
        st.caption(
            "This request was not profiled. Send one with `X-Lab-Profile: on` (or set "
            "`LAB_PROFILE_EVERY`), or profile the next request of this kind:"
        )
    for number, view in enumerate(found):
        label = "the request" if number == 0 else f"job: {view.name}"
        with st.expander(f"{view.service}: {label} ({view.duration_ms:,.1f} ms profiled)",
                         expanded=number == 0):  # fmt: skip
            profile(view, key=f"profile_{view.span_id}")
    if found:
        st.caption(
            "Sampled every millisecond by pyinstrument. A profiled request runs slower than its "
            "unprofiled twins (the profiler's own cost): read the shares, not the duration."
        )
    profile_next(trace_id)


def profile(view: data.ProfileView, *, key: str) -> None:
    chart, table = st.columns([3, 2])
    chart.plotly_chart(figures.profile_icicle(view.icicle), key=f"{key}_icicle")
    table.plotly_chart(figures.profile_groups(view.by_group), key=f"{key}_groups")
    table.dataframe(view.top, column_config=PROFILE_COLUMNS, hide_index=True, key=f"{key}_top")
    st.download_button(
        "Download for speedscope",
        view.document,
        file_name=f"{view.span_id}.speedscope.json",
        mime="application/json",
        key=f"{key}_download",
        help="Open it at https://www.speedscope.app (or `latency-lab profile TRACE_ID`).",
    )


def profile_next(trace_id: str) -> None:
    kind = data.request_of(trace_id)
    if kind is None or kind.method != "GET":
        return
    chosen = st.selectbox(
        "Configuration", configs.choices(kind.config), key="profile_config",
        format_func=configs.short_label, help="Profile the same request in this configuration.",
    )  # fmt: skip
    if st.button(f"Profile the next GET {kind.target}", key="profile_next"):
        st.query_params["trace"] = data.profile_request(kind.target, chosen)
        st.rerun()


def main() -> None:
    st.title("Trace explorer")
    st.caption("One request, span by span: where its time went and what to fix.")
    window_s = panels.selected_window()
    with panels.reporting_problems():
        trace_id = choose_request(window_s)
        if trace_id:
            show(trace_id)


if __name__ == "__main__":
    main()
