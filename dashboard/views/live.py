"""Live: the headline numbers of the configuration running now, and how they moved over time.

Everything below the title refreshes on its own every two seconds (``st.fragment``), without
rerunning the page: flip a switch in the sidebar, drive some load, and watch the numbers move.
Deltas compare with the previous configuration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from latency_lab.dashboard import configs, data, figures, panels
from latency_lab.worker.queue_flow import Verdict, assess

REFRESH_S = 2.0


def headline_metrics(headline: data.Headline) -> None:
    now, before = headline.current or {}, headline.previous or {}

    def metric(
        column: Any,
        label: str,
        key: str,
        text: str,
        unit: str = "",
        better: str = "inverse",
        help_text: str | None = None,
        digits: int = 1,
        scale: float = 1.0,
    ) -> None:
        change = panels.delta(now.get(key), before.get(key), unit, digits, scale)
        column.metric(label, text, change, delta_color=better, help=help_text, border=True)

    row = st.columns(5)
    metric(row[0], "p50 latency", "p50_ms", panels.ms(now.get("p50_ms")), " ms")
    metric(row[1], "p95 latency", "p95_ms", panels.ms(now.get("p95_ms")), " ms")
    metric(row[2], "p99 latency", "p99_ms", panels.ms(now.get("p99_ms")), " ms")
    metric(
        row[3],
        "Requests / s",
        "requests_per_s",
        panels.number(now.get("requests_per_s")),
        better="normal",
        help_text="Requests at the front door over this configuration's run.",
    )
    metric(
        row[4],
        "Error rate",
        "error_rate",
        panels.pct(now.get("error_rate")),
        " pts",
        help_text="Share of 5xx answers.",
        scale=100,
    )
    row = st.columns(5)
    metric(
        row[0],
        "Statements / request",
        "statements",
        panels.number(now.get("statements")),
        help_text="SQL statements per request that reached the service.",
    )
    metric(
        row[1],
        "Third-party time / request",
        "ext_ms",
        panels.ms(now.get("ext_ms")),
        " ms",
        help_text="Time spent waiting on providers on the request path.",
    )
    for column, layer, name in zip(
        row[2:], ("edge", "redis", "app"), ("Edge (CDN)", "L1 Redis", "L2 app"), strict=True
    ):
        metric(
            column,
            f"{name} hit rate",
            f"hit_rate_{layer}",
            panels.pct(now.get(f"hit_rate_{layer}")),
            " pts",
            better="normal",
            digits=0,
            scale=100,
        )
    gauges = st.columns(5)
    gauges[0].metric(
        "Queue depth",
        "—" if headline.queue_depth is None else headline.queue_depth,
        help="Jobs waiting in the side-effects queue (Redis).",
        border=True,
    )
    gauges[1].metric(
        "Dropped spans",
        f"{headline.dropped_spans:,}",
        help="Spans the processes could not export (full queues).",
        border=True,
    )
    gauges[2].metric(
        "Requests measured",
        f"{now.get('requests', 0):,}",
        help="Front-door requests of this configuration in the window.",
        border=True,
    )
    queue_flow(gauges[3])


def queue_flow(column: Any) -> None:
    """Jobs arriving and completing; a warning, with the fix, when the queue falls behind."""
    flow = data.queue_flow()
    column.metric(
        "Jobs in / out",
        "—" if flow is None else f"{flow.arrival_rate:.1f} / {flow.completion_rate:.1f} /s",
        help="Jobs enqueued and jobs done per second over the last 30 s (Background jobs).",
        border=True,
    )
    verdict = assess(flow) if flow is not None else None
    if verdict is not None and verdict.verdict is Verdict.FALLING_BEHIND:
        st.warning(f"Background jobs: {verdict.summary} {verdict.advice}", icon=":material/queue:")


def describe(headline: data.Headline) -> None:
    now, before = headline.current, headline.previous
    if now is None:
        return
    since = datetime.fromtimestamp(now["first_ns"] / 1e9, tz=UTC).astimezone()
    where = "at the edge" if now["measured_at"] == data.EDGE_ROLE else "at the service"
    text = f"Now: **{now['label']}**, since {since:%H:%M:%S}, measured {where}."
    if before is not None:
        text += (
            f" Deltas against the previous configuration, **{before['label']}** "
            f"({configs.changes(before['config'], now['config'])} since)."
        )
    st.markdown(text)


def charts(window_s: int) -> None:
    series = data.time_series(window_s)
    flips = configs.flips(series)
    st.plotly_chart(figures.latency_over_time(series, flips), key="latency_chart")
    left, right = st.columns(2)
    left.plotly_chart(figures.statements_over_time(series, flips), key="statements_chart")
    span = (series["time"].min(), series["time"].max()) if not series.empty else None
    right.plotly_chart(
        figures.hit_rate_over_time(data.hit_rates_long(series), span), key="hit_rate_chart"
    )
    st.caption(f"{data.bucket_seconds(window_s)} s buckets · ◆ marks a toggle flip.")


@panels.guarded
def live_view() -> None:
    window_s = panels.selected_window()
    headline = data.headline(window_s)
    if headline.current is None:
        panels.no_traffic()
        return
    describe(headline)
    headline_metrics(headline)
    charts(window_s)


def main() -> None:
    title, switch = st.columns([5, 1], vertical_alignment="bottom")
    title.title("Live")
    live = switch.toggle(
        "Live updates",
        value=True,
        key="live_updates",
        help=f"Refresh every {REFRESH_S:.0f} s without reloading the page.",
    )
    st.caption("Flip a switch in the sidebar, drive some load, and watch the numbers move.")
    st.fragment(run_every=REFRESH_S if live else None)(live_view)()


if __name__ == "__main__":
    main()
