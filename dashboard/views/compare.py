"""Compare configurations: the article's "Measurable impact" table, live, and two side by side.

Every configuration seen in the window gets a row: latency percentiles and throughput at the
front door, the cost behind it (statements, third-party time, hit rates), and the ratio to the
all-off baseline. Pick two to see where their time went by span kind and how their span counts
differ.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from latency_lab.dashboard import configs, data, figures, panels

TABLE_COLUMNS = {
    "label": st.column_config.TextColumn("Configuration", width="medium", pinned=True),
    "p50_ms": st.column_config.NumberColumn("p50 ms", format="%.1f", width="small"),
    "p95_ms": st.column_config.NumberColumn("p95 ms", format="%.1f", width="small"),
    "p99_ms": st.column_config.NumberColumn("p99 ms", format="%.1f", width="small"),
    "speedup": st.column_config.TextColumn("p50 vs all off"),
    "requests_per_s": st.column_config.NumberColumn("Req/s", format="%.1f", width="small"),
    "throughput_vs_baseline": st.column_config.NumberColumn(
        "vs all off", format="%.1f\u00d7", width="small"
    ),
    "statements": st.column_config.NumberColumn(
        "Statements", format="%.1f", width="small", help="SQL statements per request"
    ),
    "ext_ms": st.column_config.NumberColumn(
        "3rd-party ms", format="%.1f", width="small", help="Third-party time per request, inline"
    ),
    "edge_hits": st.column_config.TextColumn("Edge hits", width="small"),
    "l1_hits": st.column_config.TextColumn("L1 hits", width="small"),
    "l2_hits": st.column_config.TextColumn("L2 hits", width="small"),
    "errors": st.column_config.TextColumn("Errors", width="small"),
    "requests": st.column_config.NumberColumn("Requests", format="%d", width="small"),
}


def article_summary(table: pd.DataFrame) -> None:
    """The article's before/after, measured: all off against all on."""
    rows = table.set_index("config")
    before, after = configs.BASELINE, configs.cumulative(5).label()
    if before not in rows.index or after not in rows.index:
        st.info(
            "Measure both **all off** and **all on** in this window to see the article's "
            "headline (500 ms → 50 ms, 2\u00d7 throughput) with your own numbers.",
            icon=":material/info:",
        )
        return
    old, new = rows.loc[before], rows.loc[after]
    left, middle, right = st.columns(3)
    left.metric(
        "p50, all off → all on",
        f"{panels.ms(old.p50_ms)} → {panels.ms(new.p50_ms)}",
        f"{new.p50_ms / old.p50_ms - 1:+.1%}",
        delta_color="inverse",
        border=True,
        help="The article: 500 ms → 50 ms (-90 %).",
    )
    middle.metric(
        "Throughput",
        f"{panels.number(new.requests_per_s)} requests/s",
        f"{new.requests_per_s / old.requests_per_s:.1f}\u00d7 all off",
        border=True,
        help="The article: 2\u00d7 requests per second.",
    )
    right.metric(
        "Statements per request",
        panels.number(new.statements),
        panels.delta(new.statements, old.statements),
        delta_color="inverse",
        border=True,
        help="The article: from 100+ to 1 per request.",
    )


def impact(window_s: int) -> pd.DataFrame | None:
    table = data.impact_table(data.config_summary(window_s))
    if table.empty:
        panels.no_traffic()
        return None
    article_summary(table)
    shown = table.assign(
        edge_hits=table["hit_rate_edge"].map(panels.pct),
        l1_hits=table["hit_rate_redis"].map(panels.pct),
        l2_hits=table["hit_rate_app"].map(panels.pct),
        errors=table["error_rate"].map(panels.pct),
    )
    st.dataframe(
        shown,
        column_order=list(TABLE_COLUMNS),
        column_config=TABLE_COLUMNS,
        hide_index=True,
        key="impact_table",
    )
    st.caption(
        "Latency and throughput at the front door; statements, third-party time and L1/L2 "
        "hit rates from the requests that reached the service. Throughput depends on the "
        "load you drive: compare runs with the same concurrency."
    )
    st.plotly_chart(figures.impact_bars(table), key="impact_chart")
    return table


def pick_two(table: pd.DataFrame, window_s: int) -> None:
    st.subheader("Two configurations side by side")
    options = table["config"].tolist()
    if len(options) < 2:
        st.info(
            "Only one configuration so far: flip a switch and drive some load to compare.",
            icon=":material/info:",
        )
        return
    first = options.index(configs.BASELINE) if configs.BASELINE in options else 0
    left, right = st.columns(2)
    a = left.selectbox(
        "Configuration A", options, index=first, format_func=configs.short_label, key="compare_a"
    )
    b = right.selectbox(
        "Configuration B",
        options,
        index=len(options) - 1,
        format_func=configs.short_label,
        key="compare_b",
    )
    breakdown = data.kind_breakdown((a, b), window_s)
    chart, counts = st.columns([3, 2])
    chart.plotly_chart(figures.time_by_kind(breakdown), key="kind_chart")
    counts.plotly_chart(figures.span_counts(breakdown), key="span_count_chart")
    st.dataframe(kind_differences(breakdown, a, b), hide_index=True, key="kind_table")
    sampled = breakdown.groupby("label")["sampled"].first().to_dict()
    st.caption(
        "Self time per span kind, averaged over the most recent requests of each "
        f"configuration ({', '.join(f'{k}: {n}' for k, n in sampled.items())}). "
        "Background jobs run in workers, off the request path."
    )


def kind_differences(breakdown: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    wide = breakdown.pivot_table(
        index="kind", columns="config", values=["time_ms", "spans"], fill_value=0.0
    )
    out = pd.DataFrame({"span kind": [figures.KIND_NAMES.get(k, k) for k in wide.index]})
    for name, column in (("A", a), ("B", b)):
        out[f"ms/request {name}"] = wide["time_ms"].get(column, 0.0).round(2).to_numpy()
        out[f"spans/request {name}"] = wide["spans"].get(column, 0.0).round(1).to_numpy()
    out["spans B - A"] = out["spans/request B"] - out["spans/request A"]
    return out


def main() -> None:
    st.title("Compare configurations")
    st.caption("The article's *Measurable impact*, measured live on this machine.")
    window_s = panels.selected_window()
    with panels.reporting_problems():
        table = impact(window_s)
        if table is not None:
            pick_two(table, window_s)


if __name__ == "__main__":
    main()
