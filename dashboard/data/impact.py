"""The article's "Measurable impact" table, live: each configuration against the all-off
baseline."""

from __future__ import annotations

import pandas as pd

from latency_lab.dashboard import configs


def impact_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with ratios to the all-off baseline: ``p50_vs_baseline``, ``speedup``...

    Ratios are ``None`` when the baseline was not measured in the window.
    """
    out = summary.copy()
    base = out[out["config"] == configs.BASELINE]
    if base.empty or out.empty:
        out["p50_vs_baseline"] = None
        out["throughput_vs_baseline"] = None
        out["statements_vs_baseline"] = None
        out["speedup"] = None
        return out
    baseline = base.iloc[0]
    out["p50_vs_baseline"] = out["p50_ms"] / baseline["p50_ms"]
    out["throughput_vs_baseline"] = out["requests_per_s"] / baseline["requests_per_s"]
    out["statements_vs_baseline"] = (
        out["statements"] / baseline["statements"] if baseline["statements"] else None
    )
    out["speedup"] = [
        f"{1 / ratio:.1f}\u00d7 faster" if ratio and ratio < 1 else f"{ratio:.1f}\u00d7 baseline"
        for ratio in out["p50_vs_baseline"]
    ]
    return out
