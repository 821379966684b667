"""Background jobs: the side-effects queue as RQ sees it.

With ``async_offload`` on, email, analytics and enrichment calls become RQ jobs. This page shows
the queue's length, each registry (started, finished, failed, scheduled for a retry), whether the
workers keep up (arrival and completion rates, the expected wait by Little's law, and what to
change when arrivals outrun completions), the worker processes, how long recent jobs waited and
ran, and every failure with its error.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from latency_lab.dashboard import data, figures, panels
from latency_lab.worker.queue_flow import QueueFlow, Verdict, assess

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


def flow(queue: QueueFlow) -> None:
    """Does the queue keep up? Rates over the last window, and the wait they mean."""
    window = f"the last {queue.window_s:.0f} s"
    wait = queue.expected_wait_s
    cards = {
        "Arrivals": (
            f"{queue.arrival_rate:.1f}/s",
            f"Jobs enqueued in {window}: {queue.arrivals:,}.",
        ),
        "Completions": (
            f"{queue.completion_rate:.1f}/s",
            f"Jobs done in {window} (finished, or failed after their retries): "
            f"{queue.completions:,}.",
        ),
        "Expected wait": (
            "∞" if wait == float("inf") else f"{wait:.1f} s",
            "Little's law, W = L / λ: the jobs queued ahead of a new one over the completion rate.",
        ),
        "Slots busy": (
            f"{queue.running} of {queue.slots}",
            "Jobs running at once, of the slots the worker processes offer "
            "(LAB_RQ_WORKERS x LAB_RQ_CONCURRENCY).",
        ),
    }
    for column, (label, (value, help_text)) in zip(st.columns(4), cards.items(), strict=True):
        column.metric(label, value, help=help_text, border=True)
    verdict = assess(queue)
    if verdict.verdict is Verdict.FALLING_BEHIND:
        st.warning(f"{verdict.summary}\n\n{verdict.advice}", icon=":material/trending_up:")
    elif verdict.verdict is Verdict.DRAINING:
        st.info(verdict.summary, icon=":material/trending_down:")
    else:
        st.caption(verdict.summary)


def workers(snapshot: data.JobsSnapshot) -> None:
    st.subheader("Workers")
    if snapshot.workers.empty:
        st.warning(
            "No RQ worker is running: offloaded jobs wait in the queue. `latency-lab up` "
            "starts workers (`--rq-workers N`); `python -m latency_lab.worker.process` starts one.",
            icon=":material/person_off:",
        )
        return
    st.caption("One row per worker process; each runs its slots' jobs at once, on threads.")
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
    flow(snapshot.flow)
    st.plotly_chart(figures.job_durations(snapshot.finished), key="job_durations")
    workers(snapshot)
    failures(snapshot)


def main() -> None:
    st.title("Background jobs")
    st.caption("The side-effects queue (RQ on Redis): what waits, what runs, what failed.")
    st.fragment(run_every=REFRESH_S)(jobs_view)()


if __name__ == "__main__":
    main()
