"""The dashboard's charts: pure functions from data frames to plotly figures.

Nothing here reads a store, calls a service or touches Streamlit; every function takes the frames
:mod:`latency_lab.dashboard.data` returns (documented there) and gives back a ``go.Figure``, so the
charts can be tested and reused by the bench. Colours are stable: a configuration always gets the
same colour (all off red, all on green), and each span kind has its own.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from latency_lab.core.toggles import Toggle
from latency_lab.dashboard import configs
from latency_lab.dashboard.traces import BACKGROUND, KIND_ORDER
from latency_lab.telemetry.profiles import CodeGroup

KIND_COLORS = {
    "database": "#4C78A8",
    "cache": "#54A24B",
    "third_party": "#E45756",
    "queue": "#B279A2",
    "application": "#9D9D9D",
    BACKGROUND: "#F2CF5B",
}
KIND_NAMES = {
    "database": "database",
    "cache": "cache",
    "third_party": "third party",
    "queue": "queue",
    "application": "application",
    BACKGROUND: "background job (off the request path)",
}
SHORT_KIND_NAMES = {**KIND_NAMES, BACKGROUND: "background"}
LAYER_COLORS = {"edge (CDN)": "#F58518", "L1 Redis": "#E45756", "L2 app": "#72B7B2"}
BASELINE_COLOR, ALL_ON_COLOR = "#D62728", "#2CA02C"
N_PLUS_ONE_COLOR = "#D62728"
FLIP_MARKER_Y = 0.99
LOG_TICKS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
STEP_COLORS = (BASELINE_COLOR, "#FF7F0E", "#9467BD", "#1F77B4", "#17BECF", ALL_ON_COLOR)
_PALETTE = [
    color
    for color in px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    if color.upper() not in {c.upper() for c in STEP_COLORS}
]
_LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
    "hovermode": "closest",
}


@lru_cache(maxsize=128)
def config_color(config: str) -> str:
    """One colour per configuration, the same in every chart and session.

    The article's steps (all off, then one more optimization each) go from red to green; any
    other configuration gets a colour of its own from a palette without those.
    """
    toggles = configs.parse(config)
    if toggles is None:
        return "#7F7F7F"
    for step, color in enumerate(STEP_COLORS):
        if toggles == configs.cumulative(step):
            return color
    mask = sum(1 << i for i, toggle in enumerate(Toggle) if toggles.enabled(toggle))
    return str(_PALETTE[mask % len(_PALETTE)])


def log_ticks(low: float, high: float) -> list[float]:
    """Tick values for a log axis: 1-2-5 per decade, denser when the data spans less than one."""
    if not (low > 0 and high > 0):
        return LOG_TICKS
    dense = high / low < 10
    steps = (1, 1.5, 2, 3, 5, 7) if dense else (1, 2, 5)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    return [step * 10.0**exponent for exponent in range(first, last + 1) for step in steps]


def empty(message: str) -> go.Figure:
    """A blank chart that says why it is blank."""
    figure = go.Figure()
    figure.add_annotation(
        text=message,
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font={"size": 14, "color": "#888"},
    )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure.update_layout(height=220, **_LAYOUT)


# --- over time -----------------------------------------------------------------------------------
def latency_over_time(series: pd.DataFrame, flips: pd.DataFrame) -> go.Figure:
    """p50 (solid) and p95 (dotted) per time bucket, coloured by configuration, flips marked."""
    if series.empty:
        return empty("No requests in this window yet")
    figure = go.Figure()
    for config, rows in series.groupby("config", sort=False):
        color, label = config_color(str(config)), str(rows["label"].iloc[0])
        figure.add_trace(
            go.Scatter(
                x=rows["time"],
                y=rows["p50_ms"],
                name=label,
                legendgroup=label,
                mode="lines+markers",
                line={"color": color},
                marker={"size": 8},
                customdata=rows[["p95_ms", "requests"]],
                hovertemplate=(
                    f"<b>{label}</b><br>%{{x|%H:%M:%S}}<br>p50 %{{y:.1f}} ms<br>"
                    "p95 %{customdata[0]:.1f} ms<br>%{customdata[1]} requests"
                    "<extra></extra>"
                ),
            )
        )
        figure.add_trace(
            go.Scatter(
                x=rows["time"],
                y=rows["p95_ms"],
                name=f"{label} p95",
                legendgroup=label,
                showlegend=False,
                mode="lines",
                line={"color": color, "dash": "dot", "width": 1},
                hoverinfo="skip",
            )
        )
    ticks = log_ticks(series["p50_ms"].min(), series["p95_ms"].max())
    figure.update_yaxes(title=None, type="log", tickvals=ticks, ticksuffix=" ms")
    figure.update_xaxes(title=None)
    _mark_flips(figure, flips)  # after the axis updates: its own overlaid axis stays linear
    title = "Latency at the front door: p50 (solid), p95 (dotted), log scale"
    return figure.update_layout(height=380, title=title, **_LAYOUT)


def statements_over_time(series: pd.DataFrame, flips: pd.DataFrame) -> go.Figure:
    """Average SQL statements per request reaching the service, by configuration."""
    rows = series.dropna(subset=["statements"]) if not series.empty else series
    if rows.empty:
        return empty("No requests reached the service in this window")
    figure = _by_config(rows, "statements", "%{y:.1f} statements / request")
    figure.update_yaxes(title=None, rangemode="tozero")
    _mark_flips(figure, flips, labels=False)
    figure.update_layout(height=300, title="Database statements per request", **_LAYOUT)
    return figure.update_layout(showlegend=False)


def hit_rate_over_time(long: pd.DataFrame, span: tuple[Any, Any] | None = None) -> go.Figure:
    """Hit rate per cache layer per time bucket (``time``, ``layer``, ``hit_rate``); ``span``
    sets the time axis, so it lines up with the other charts of the page."""
    if long.empty:
        return empty("No cache was consulted in this window (switch a cache layer on)")
    figure = go.Figure()
    for layer, rows in long.groupby("layer", sort=False):
        figure.add_trace(
            go.Scatter(
                x=rows["time"],
                y=rows["hit_rate"],
                name=str(layer),
                mode="lines+markers",
                line={"color": LAYER_COLORS.get(str(layer))},
                hovertemplate=f"<b>{layer}</b><br>%{{x|%H:%M:%S}}<br>%{{y:.0%}} hits"
                "<extra></extra>",
            )
        )
    figure.update_yaxes(title=None, tickformat=".0%", range=[0, 1.05])
    if span is not None:
        start, end = pd.Timestamp(span[0]), pd.Timestamp(span[1])
        pad = (end - start) * 0.03 or pd.Timedelta(seconds=1)
        figure.update_xaxes(range=[start - pad, end + pad])
    return figure.update_layout(height=300, title="Cache hit rate per layer", **_LAYOUT)


def _by_config(rows: pd.DataFrame, column: str, value_format: str) -> go.Figure:
    figure = go.Figure()
    for config, group in rows.groupby("config", sort=False):
        label = str(group["label"].iloc[0])
        figure.add_trace(
            go.Scatter(
                x=group["time"],
                y=group[column],
                name=label,
                mode="lines+markers",
                line={"color": config_color(str(config))},
                marker={"size": 8},
                hovertemplate=f"<b>{label}</b><br>%{{x|%H:%M:%S}}<br>{value_format}<extra></extra>",
            )
        )
    return figure


def _mark_flips(figure: go.Figure, flips: pd.DataFrame, *, labels: bool = True) -> None:
    """At every toggle flip: a dotted line, a diamond on the top edge (hover for what moved)
    and, with ``labels``, the change written beside it. The diamonds sit on an overlaid 0..1
    axis so they never hide the data points of the configuration that starts there."""
    if flips.empty:
        return
    figure.add_trace(
        go.Scatter(
            x=flips["time"],
            y=[FLIP_MARKER_Y] * len(flips),
            yaxis="y2",
            mode="markers",
            name="toggle flip",
            text=flips["label"],
            cliponaxis=False,
            marker={
                "symbol": "diamond",
                "size": 11,
                "color": "#222",
                "line": {"color": "white", "width": 1},
            },
            hovertemplate="<b>%{text}</b><br>%{x|%H:%M:%S}<extra></extra>",
        )
    )
    figure.update_layout(
        yaxis2={"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True}
    )
    for index, (time, label) in enumerate(zip(flips["time"], flips["label"], strict=True)):
        figure.add_shape(
            type="line",
            x0=time,
            x1=time,
            y0=0,
            y1=1,
            yref="paper",
            line={"color": "#444", "width": 1, "dash": "dot"},
        )
        if labels:
            figure.add_annotation(
                x=time,
                y=0.93 - 0.07 * (index % 3),
                yref="paper",
                text=label,
                showarrow=False,
                xanchor="left",
                xshift=4,
                font={"size": 11},
                bgcolor="rgba(255,255,255,0.85)",
            )


# --- compare -------------------------------------------------------------------------------------
def impact_bars(summary: pd.DataFrame) -> go.Figure:
    """p50 and p95 per configuration, fastest at the top, with the ratio to the baseline."""
    if summary.empty:
        return empty("No configurations measured in this window")
    ordered = summary.sort_values("p50_ms", ascending=True)
    colors = [config_color(c) for c in ordered["config"]]
    figure = go.Figure()
    figure.add_trace(
        go.Bar(
            y=ordered["label"],
            x=ordered["p50_ms"],
            orientation="h",
            name="p50",
            marker={"color": colors},
            text=ordered.get("speedup"),
            textposition="outside",
            hovertemplate="<b>%{y}</b><br>p50 %{x:.1f} ms<extra></extra>",
        )
    )
    figure.add_trace(
        go.Scatter(
            y=ordered["label"],
            x=ordered["p95_ms"],
            mode="markers",
            name="p95",
            marker={"symbol": "line-ns-open", "size": 16, "color": "#333"},
            hovertemplate="<b>%{y}</b><br>p95 %{x:.1f} ms<extra></extra>",
        )
    )
    figure.update_xaxes(title=None, type="log", tickvals=LOG_TICKS, ticksuffix=" ms")
    figure.update_yaxes(autorange="reversed", title=None)
    height = 120 + 34 * len(ordered)
    return figure.update_layout(
        height=height, title="Latency by configuration: p50 (bar), p95 (tick), log scale", **_LAYOUT
    )


def time_by_kind(breakdown: pd.DataFrame) -> go.Figure:
    """Stacked time per request by span kind, one bar per configuration."""
    if breakdown.empty:
        return empty("No traces sampled for these configurations")
    figure = go.Figure()
    for kind in KIND_ORDER:
        rows = breakdown[breakdown["kind"] == kind]
        if rows.empty:
            continue
        figure.add_trace(
            go.Bar(
                y=rows["label"],
                x=rows["time_ms"],
                orientation="h",
                name=KIND_NAMES[kind],
                marker={
                    "color": KIND_COLORS[kind],
                    "pattern": {"shape": "/" if kind == BACKGROUND else ""},
                },
                hovertemplate=f"<b>%{{y}}</b><br>{KIND_NAMES[kind]}: %{{x:.2f}} ms / request"
                "<extra></extra>",
            )
        )
    figure.update_xaxes(title=None, ticksuffix=" ms")
    figure.update_yaxes(title=None, autorange="reversed")
    height = 180 + 60 * breakdown["label"].nunique()
    return figure.update_layout(
        barmode="stack",
        height=height,
        title="Where the time went (self time per request)",
        **_LAYOUT,
    )


def span_counts(breakdown: pd.DataFrame) -> go.Figure:
    """Spans per request by kind, configurations side by side."""
    if breakdown.empty:
        return empty("No traces sampled for these configurations")
    figure = go.Figure()
    for config, rows in breakdown.groupby("config", sort=False):
        label = str(rows["label"].iloc[0])
        figure.add_trace(
            go.Bar(
                x=[SHORT_KIND_NAMES[k] for k in rows["kind"]],
                y=rows["spans"],
                name=label,
                marker={"color": config_color(str(config))},
                text=rows["spans"].round(1),
                textposition="outside",
                hovertemplate=f"<b>{label}</b><br>%{{x}}: %{{y:.1f}} spans / request"
                "<extra></extra>",
            )
        )
    figure.update_yaxes(title=None, type="log", tickvals=[0.1, 1, 10, 100, 1000, 10000])
    return figure.update_layout(
        barmode="group", height=340, title="Spans per request, by kind (log scale)", **_LAYOUT
    )


# --- one trace -----------------------------------------------------------------------------------
def waterfall(segments: pd.DataFrame) -> go.Figure:
    """A trace's spans on a timeline, nested and coloured by kind; N+1 rows outlined in red."""
    if segments.empty:
        return empty("This trace has no spans in the store")
    total = float((segments["start_ms"] + segments["duration_ms"]).max()) or 1.0
    figure = go.Figure()
    for kind in KIND_ORDER:
        rows = segments[segments["kind"] == kind]
        if rows.empty:
            continue
        outline = [N_PLUS_ONE_COLOR if flag else "rgba(0,0,0,0)" for flag in rows["n_plus_one"]]
        figure.add_trace(
            go.Bar(
                y=rows["row"],
                base=rows["start_ms"],
                x=rows["duration_ms"].clip(lower=total / 400),
                orientation="h",
                name=KIND_NAMES[kind],
                marker={"color": KIND_COLORS[kind], "line": {"color": outline, "width": 1.5}},
                customdata=rows[["duration_ms", "detail"]],
                hovertemplate="%{customdata[1]}<br>%{customdata[0]:.2f} ms, "
                "starts at %{base:.1f} ms<extra></extra>",
            )
        )
    _waterfall_axes(figure, segments)
    height = 90 + 24 * (int(segments["row"].max()) + 1)
    return figure.update_layout(barmode="overlay", height=height, bargap=0.25, **_LAYOUT)


def _waterfall_axes(figure: go.Figure, segments: pd.DataFrame) -> None:
    rows = segments.groupby("row").agg(label=("label", "first"), n_plus_one=("n_plus_one", "any"))
    ticks = [
        f"<span style='color:{N_PLUS_ONE_COLOR}'><b>⚠ {label}</b></span>" if flagged else label
        for label, flagged in zip(rows["label"], rows["n_plus_one"], strict=True)
    ]
    figure.update_yaxes(
        tickvals=list(rows.index),
        ticktext=ticks,
        autorange="reversed",
        title=None,
        tickfont={"family": "monospace", "size": 11},
    )
    figure.update_xaxes(title=None, rangemode="tozero", ticksuffix=" ms")


# --- profiles ------------------------------------------------------------------------------------
CODE_GROUP_COLORS = {
    CodeGroup.ORM.value: "#4C78A8",
    CodeGroup.DRIVER.value: "#9ECAE9",
    CodeGroup.SERIALIZATION.value: "#F58518",
    CodeGroup.FRAMEWORK.value: "#72B7B2",
    CodeGroup.TELEMETRY.value: "#B279A2",
    CodeGroup.LAB.value: "#54A24B",
    CodeGroup.WAITING.value: "#D8D8D8",
    CodeGroup.OTHER.value: "#9D9D9D",
}


def profile_icicle(rows: pd.DataFrame) -> go.Figure:
    """A request's call tree (``id``, ``parent``, ``label``, ``total_ms``, ``group``): callers
    above their callees, widths in milliseconds, coloured by the package the code is in."""
    if rows.empty:
        return empty("This profile has no samples")
    colors = [CODE_GROUP_COLORS.get(str(group), "#9D9D9D") for group in rows["group"]]
    figure = go.Figure(
        go.Icicle(
            ids=rows["id"],
            parents=rows["parent"],
            labels=rows["label"],
            values=rows["total_ms"],
            branchvalues="total",
            marker={"colors": colors},
            customdata=rows[["group", "file"]],
            hovertemplate="<b>%{label}</b><br>%{value:.2f} ms · %{customdata[0]}"
            "<br>%{customdata[1]}<extra></extra>",
            tiling={"orientation": "v"},
            maxdepth=12,
        )
    )
    return figure.update_layout(height=520, margin={"t": 10, "l": 0, "r": 0, "b": 0})


def profile_groups(groups: pd.DataFrame) -> go.Figure:
    """Self time per package group (``group``, ``self_ms``), one horizontal bar each."""
    if groups.empty:
        return empty("This profile has no samples")
    ordered = groups.sort_values("self_ms")
    figure = go.Figure(
        go.Bar(
            y=ordered["group"],
            x=ordered["self_ms"],
            orientation="h",
            marker={"color": [CODE_GROUP_COLORS.get(g, "#9D9D9D") for g in ordered["group"]]},
            hovertemplate="%{y}: %{x:.1f} ms<extra></extra>",
        )
    )
    figure.update_xaxes(title=None, ticksuffix=" ms")
    return figure.update_layout(height=60 + 28 * len(ordered), **_LAYOUT)


# --- jobs ----------------------------------------------------------------------------------------
def job_durations(finished: pd.DataFrame) -> go.Figure:
    """Time in the queue and time running, per task, for recent finished jobs."""
    rows = finished.dropna(subset=["run_ms"]) if not finished.empty else finished
    if rows.empty:
        return empty("No finished jobs yet (switch async_offload on and drive some load)")
    long = rows.melt(
        id_vars=["task"], value_vars=["wait_ms", "run_ms"], var_name="phase", value_name="ms"
    ).dropna()
    long["phase"] = long["phase"].map({"wait_ms": "waiting in the queue", "run_ms": "running"})
    figure = px.box(
        long,
        x="ms",
        y="task",
        color="phase",
        points="outliers",
        color_discrete_map={"waiting in the queue": "#B279A2", "running": "#F2CF5B"},
    )
    figure.update_xaxes(title=None, type="log", tickvals=LOG_TICKS, ticksuffix=" ms")
    figure.update_yaxes(title=None)
    return figure.update_layout(height=300, title="Job durations (recent finished jobs)", **_LAYOUT)
