"""Background jobs: the side-effects queue as RQ sees it.

With ``async_offload`` on, email, analytics and enrichment calls become RQ jobs. This page shows
the queue's length, each registry (started, finished, failed, scheduled for a retry), the
workers, how long recent jobs waited and ran, and every failure with its error.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from latency_lab.dashboard import data, figures, panels

REFRESH_S = 2.0
FAILURE_COLUMNS: dict[str, Any] = {
    "ended": st.column_config.DatetimeColumn("Failed at", format="HH:mm:ss"),
    "task": "Task",
    "error": st.column_config.TextColumn("Error", width="large"),
    "job": "Job id",
}


def counts(snapshot: data.JobsSnapshot) -> None:
    labels = {
        "queued": ("Queued", "Waiting for a worker."),
        "started": ("Running", "Taken by a worker right now."),
        "finished": ("Finished", "Done, kept for a while by RQ."),
        "failed": ("Failed", "Out of retries: see the failures below."),
        "scheduled": ("Retrying", "Failed once, scheduled to run again."),
    }
    for column, (key, (label, help_text)) in zip(
        st.columns(len(labels)), labels.items(), strict=True
    ):
        column.metric(label, f"{snapshot.counts.get(key, 0):,}", help=help_text, border=True)


def workers(snapshot: data.JobsSnapshot) -> None:
    st.subheader("Workers")
    if snapshot.workers.empty:
        st.warning(
            "No RQ worker is running: offloaded jobs wait in the queue. `latency-lab up` "
            "starts workers (`--rq-workers N`); `python -m latency_lab.worker.process` starts one.",
            icon=":material/person_off:",
        )
        return
    st.dataframe(snapshot.workers, hide_index=True, key="workers_table")


def failures(snapshot: data.JobsSnapshot) -> None:
    st.subheader("Failures")
    if snapshot.failures.empty:
        st.caption(
            "No failed jobs. Raise a provider's failure rate on the *Simulated world* "
            "page to watch retries and failures."
        )
        return
    st.dataframe(
        snapshot.failures,
        column_order=list(FAILURE_COLUMNS),
        column_config=FAILURE_COLUMNS,
        hide_index=True,
        key="failures_table",
    )
    latest = snapshot.failures.iloc[0]
    with st.expander(f"Traceback of the latest failure ({latest['task']})"):
        st.code(latest["traceback"] or "(no traceback recorded)", language="text")


@panels.guarded
def jobs_view() -> None:
    snapshot = data.jobs_snapshot()
    counts(snapshot)
    st.plotly_chart(figures.job_durations(snapshot.finished), key="job_durations")
    workers(snapshot)
    failures(snapshot)


def main() -> None:
    st.title("Background jobs")
    st.caption("The side-effects queue (RQ on Redis): what waits, what runs, what failed.")
    st.fragment(run_every=REFRESH_S)(jobs_view)()


if __name__ == "__main__":
    main()
