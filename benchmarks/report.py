"""The bench report: one dict, written as JSON, Markdown and HTML (plotly charts)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from latency_lab.benchmarks.plan import (
    ARTICLE_LATENCY_MS,
    ARTICLE_STATEMENTS,
    ARTICLE_THROUGHPUT_RATIO,
    BenchPlan,
)
from latency_lab.benchmarks.requests import Target
from latency_lab.benchmarks.targets import build_targets
from latency_lab.telemetry.profiles import CodeGroup


def build_report(
    *,
    plan: BenchPlan,
    target: Target,
    configs: list[dict[str, Any]],
    sweep: list[dict[str, Any]],
    overhead: dict[str, Any],
    ingest: dict[str, Any],
    store: dict[str, Any],
    memory: dict[str, Any],
    queue: dict[str, Any],
    relay: dict[str, Any],
    default_loader: str,
    machine: dict[str, Any],
    started_lab: bool,
) -> dict[str, Any]:
    _add_ratios(configs)
    by_name = {c["name"]: c for c in configs}
    return {
        "machine": machine,
        "plan": asdict(plan),
        "target": {
            "edge": target.edge_url,
            "service": target.service_url,
            "started_by_bench": started_lab,
        },
        "configurations": configs,
        "article": _article_rows(by_name, sweep, default_loader),
        "targets": build_targets(
            by_name=by_name,
            sweep=sweep,
            overhead=overhead,
            store=store,
            memory=memory,
            queue=queue,
            relay=relay,
            default_loader=default_loader,
        ),
        "sweep": sweep,
        "telemetry_overhead": overhead,
        "trace_store_ingest": ingest,
        "dashboard_queries": store,
        "memory": memory,
        "queue": queue,
        "relay": relay,
        "default_loader": default_loader,
    }


def _add_ratios(configs: list[dict[str, Any]]) -> None:
    baseline = configs[0]
    for config in configs:
        for part in ("mix", "leads"):
            base, own = baseline[part], config[part]
            config[part]["p50_ratio_to_baseline"] = _ratio(own["p50_ms"], base["p50_ms"])
            config[part]["throughput_ratio_to_baseline"] = _ratio(
                own["requests_per_s"], base["requests_per_s"]
            )


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value and base else None


def _article_rows(
    by_name: dict[str, dict[str, Any]], sweep: list[dict[str, Any]], default_loader: str
) -> list[dict[str, Any]]:
    off, on = by_name["all off"], by_name["all on"]
    eager = by_name["eager_loading alone"]
    selectin = next(
        (r["statements"] for r in sweep if r["n"] == 100 and r["loader"] == "selectin"), None
    )
    return [
        {
            "row": "Latency, GET /api/leads?limit=100 p50 (ms)",
            "article": f"{ARTICLE_LATENCY_MS[0]:.0f} → {ARTICLE_LATENCY_MS[1]:.0f}",
            "measured": f"{off['leads']['p50_ms']} → {on['leads']['p50_ms']}",
            "ratio": _ratio(off["leads"]["p50_ms"], on["leads"]["p50_ms"]),
        },
        {
            "row": "Throughput, realistic mix (requests/s)",
            "article": f"{ARTICLE_THROUGHPUT_RATIO:.0f}x",
            "measured": f"{off['mix']['requests_per_s']} → {on['mix']['requests_per_s']}",
            "ratio": _ratio(on["mix"]["requests_per_s"], off["mix"]["requests_per_s"]),
        },
        {
            "row": "Database calls per request (GET /api/leads?limit=100)",
            "article": f"{ARTICLE_STATEMENTS[0]} → {ARTICLE_STATEMENTS[1]}",
            "measured": f"{off['leads']['statements_per_request']} → "
            f"{eager['leads']['statements_per_request']} ({default_loader}), "
            f"{selectin} (selectin)",
            "ratio": _ratio(
                off["leads"]["statements_per_request"], eager["leads"]["statements_per_request"]
            ),
        },
    ]


# --- writers --------------------------------------------------------------------------------------
def write_reports(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "report.json", directory / "report.md", directory / "report.html"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    paths[2].write_text(html(report))
    return paths


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


PROFILE_GROUPS = tuple(group.value for group in CodeGroup)


def _profile_table(configurations: list[dict[str, Any]]) -> str:
    """One row per configuration: profiled ms, then ms (share) per code group."""
    rows = []
    for c in configurations:
        profile = c.get("profile") or {}
        if not profile:
            continue
        cells = [
            f"{profile['ms'][g]} ({profile['share'][g]:.0%})"
            if profile["share"].get(g) is not None
            else "-"
            for g in PROFILE_GROUPS
        ]
        rows.append([c["name"], profile["profiles"], profile["duration_ms"], *cells])
    if not rows:
        return "(not profiled)"
    return _table(["configuration", "profiles", "profiled ms", *PROFILE_GROUPS], rows)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    parts = [
        "# Latency Lab bench",
        f"{m['when']} · Python {m['python']} · {m['cpus']} CPUs · {m['memory_gb']} GB · "
        f"{'quick smoke run' if report['plan']['quick'] else 'full run'}",
        "## The article's table, reproduced",
        _table(
            ["", "article", "measured", "ratio"],
            [[r["row"], r["article"], r["measured"], r["ratio"]] for r in report["article"]],
        ),
        "## Configurations (side by side, one run)",
        _table(
            [
                "configuration",
                "leads p50",
                "p95",
                "p99",
                "mix p50",
                "mix req/s",
                "statements/req (leads)",
                "hit edge",
                "hit redis",
                "hit app",
                "ext ms/req",
                "errors",
                "p50 vs all off",
            ],
            [
                [
                    c["name"],
                    c["leads"]["p50_ms"],
                    c["leads"]["p95_ms"],
                    c["leads"]["p99_ms"],
                    c["mix"]["p50_ms"],
                    c["mix"]["requests_per_s"],
                    c["leads"]["statements_per_request"],
                    c["mix"]["hit_rate_edge"],
                    c["mix"]["hit_rate_redis"],
                    c["mix"]["hit_rate_app"],
                    c["mix"]["ext_ms_per_request"],
                    c["mix"]["errors"] + c["leads"]["errors"],
                    c["leads"]["p50_ratio_to_baseline"],
                ]
                for c in report["configurations"]
            ],
        ),
        "## Targets",
        _table(
            ["figure", "measured", "target", "met", "why not"],
            [
                [t["figure"], t["measured"], t["target"], t["met"], t["note"]]
                for t in report["targets"]
            ],
        ),
        "## Where the service's time goes (profiles of GET /api/leads?limit=100)",
        "Self time per group of code, mean of the profiled requests of each configuration "
        "(`latency-lab profile --url '/api/leads?limit=100' --toggles ...` shows one).",
        _profile_table(report["configurations"]),
        "## Statements and latency against list size",
        _table(
            ["N", "loader", "statements", "p50 ms"],
            [[r["n"], r["loader"], r["statements"], r["p50_ms"]] for r in report["sweep"]],
        ),
        "## The lab's own costs",
        "Telemetry overhead: "
        + json.dumps({k: v for k, v in report["telemetry_overhead"].items() if k != "profiling"}),
        "What an unprofiled request pays for profiling (sampling enabled vs disabled): "
        + json.dumps(report["telemetry_overhead"].get("profiling")),
        "Trace-store ingest: " + json.dumps(report["trace_store_ingest"]),
        f"Dashboard queries on {report['dashboard_queries']['spans']:,} spans / "
        f"{report['dashboard_queries']['requests']:,} requests (ms):",
        _table(
            ["query", "ms"],
            [[k, val] for k, val in report["dashboard_queries"]["query_ms"].items()],
        ),
        *_queue_section(report),
        *_memory_section(report),
    ]
    return "\n\n".join(parts) + "\n"


def _queue_section(report: dict[str, Any]) -> list[str]:
    rows = [
        [
            c["name"],
            q.get("arrivals"),
            q.get("arrival_rate"),
            q.get("completion_rate"),
            q.get("backlog_at_end"),
            q.get("drain_s"),
        ]
        for c in report["configurations"]
        if (q := c.get("queue"))
    ]
    burst = report["queue"].get("burst")
    if burst:
        name = f"burst: {burst['requests']} uncached eager + offload reads"
        rates = [burst["arrival_rate"], burst["completion_rate"]]
        rows.append([name, burst["arrivals"], *rates, burst["backlog_at_end"], burst["drain_s"]])
    if not rows:
        return []
    return [
        "## The side-effects queue (jobs arrive with reads and writes; does it keep up?)",
        _table(
            ["load", "jobs", "arrived /s", "completed /s", "queued at the end", "drained in s"],
            rows,
        ),
        "Outbox relay on an idle lab: " + json.dumps(report["relay"]),
    ]


def _memory_section(report: dict[str, Any]) -> list[str]:
    memory = report["memory"]
    sections = []
    for key, title in (("at_rest", "at rest"), ("under_load_peak", "under load (peak PSS)")):
        sample = memory.get(key)
        if not sample:
            continue
        rows = [
            [name, int(g["count"]), g["rss_mb"], g["pss_mb"]]
            for name, g in sample["by_process"].items()
        ]
        rows.append(["whole lab", sample["processes"], sample["rss_mb"], sample["pss_mb"]])
        sections += [f"Memory {title} (MB):", _table(["process", "count", "RSS", "PSS"], rows)]
    return ["## Memory (RSS counts shared pages in every process; PSS once)", *sections]


def html(report: dict[str, Any]) -> str:
    figures = [
        _latency_figure(report),
        _sweep_figure(report, "statements", "statements"),
        _sweep_figure(report, "p50_ms", "p50 latency (ms)"),
    ]
    charts = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0))
        for i, fig in enumerate(figures)
    ]
    body = "\n".join(f"<section>{chart}</section>" for chart in charts)
    tables = markdown(report).replace("<", "&lt;")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Latency Lab bench</title>"
        "<style>body{font-family:system-ui;margin:2rem auto;max-width:72rem}"
        "pre{white-space:pre-wrap;font-size:.85rem}</style></head><body>"
        f"<h1>Latency Lab bench</h1>{body}<h2>Figures</h2><pre>{tables}</pre></body></html>"
    )


def _latency_figure(report: dict[str, Any]) -> go.Figure:
    configs = report["configurations"]
    figure = go.Figure()
    for part, label in (("leads", "GET /api/leads?limit=100"), ("mix", "realistic mix")):
        figure.add_bar(
            name=f"{label} p50",
            x=[c["name"] for c in configs],
            y=[c[part]["p50_ms"] for c in configs],
        )
    figure.update_layout(
        title="p50 latency by configuration (log scale)",
        barmode="group",
        yaxis={"type": "log", "title": "ms"},
    )
    return figure


def _sweep_figure(report: dict[str, Any], field: str, title: str) -> go.Figure:
    figure = go.Figure()
    for loader in dict.fromkeys(r["loader"] for r in report["sweep"]):
        rows = [r for r in report["sweep"] if r["loader"] == loader]
        figure.add_scatter(
            name=loader, x=[r["n"] for r in rows], y=[r[field] for r in rows], mode="lines+markers"
        )
    figure.update_layout(
        title=f"{title} against list size N",
        xaxis={"title": "leads per page (N)"},
        yaxis={"title": title},
    )
    return figure
