"""``latency-lab bench --quick`` as CI runs it: the report's shape and its statement counts.

Counts, not timings: timings are figures the report prints, never pass/fail here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from latency_lab.benchmarks.plan import configurations
from latency_lab.lab.redis_server import free_port
from tests.lab_fixtures import process_env


def _bench_environment(var_dir: Path) -> dict[str, str]:
    """A small embedded lab of the bench's own: private Redis, free ports, its own var dir."""
    env = process_env(LAB_VAR_DIR=str(var_dir), LAB_SERVICE_WORKERS="2", LAB_RQ_WORKERS="1")
    for name in ("EDGE", "SERVICE", "THIRDPARTY", "DASHBOARD"):
        env[f"LAB_{name}_PORT"] = str(free_port())
    return env


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    var_dir = tmp_path_factory.mktemp("bench")
    env = _bench_environment(var_dir)
    result = subprocess.run(
        [sys.executable, "-m", "latency_lab.cli.main", "bench", "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = sorted((var_dir / "bench").glob("*/report.json"))
    assert len(reports) == 1, result.stdout
    return json.loads(reports[0].read_text()), reports[0].parent


def test_every_configuration_is_measured_once(quick_report: tuple[dict[str, Any], Path]) -> None:
    report, _ = quick_report
    names = [c["name"] for c in report["configurations"]]

    assert names == [c.name for c in configurations()]
    assert names[0] == "all off" and names[-1] == "all on"
    for config in report["configurations"]:
        for part in ("mix", "leads"):
            assert config[part]["requests"] > 0
            assert config[part]["errors"] == 0, config


def test_statement_counts_are_the_articles(quick_report: tuple[dict[str, Any], Path]) -> None:
    report, _ = quick_report
    leads = {c["name"]: c["leads"] for c in report["configurations"]}

    assert leads["all off"]["statements_per_request"] == 301  # 1 + 3 x 100
    assert leads["eager_loading alone"]["statements_per_request"] == 1
    assert leads["all on"]["statements_per_request"] == 0  # answered from a cache
    assert leads["all on"]["hit_rate_edge"] is not None


def test_sweep_grows_linearly_when_lazy_and_stays_flat_when_eager(
    quick_report: tuple[dict[str, Any], Path],
) -> None:
    report, _ = quick_report
    statements = {(r["n"], r["loader"]): r["statements"] for r in report["sweep"]}

    for n in report["plan"]["sweep_sizes"]:
        assert statements[(n, "lazy")] == 1 + 3 * n
        assert statements[(n, "joined")] == 1
        assert statements[(n, "selectin")] == 4
        assert statements[(n, "rows")] == 3
        assert statements[(n, "json")] == 1


def test_article_rows_and_lab_costs_are_reported(
    quick_report: tuple[dict[str, Any], Path],
) -> None:
    report, directory = quick_report

    assert [row["row"].split(",")[0] for row in report["article"]] == [
        "Latency",
        "Throughput",
        "Database calls per request (GET /api/leads?limit=100)",
    ]
    assert report["telemetry_overhead"]["requests_each"] > 0
    assert report["telemetry_overhead"]["profiling"]["requests_each"] > 0
    ingest = report["trace_store_ingest"]
    assert ingest["stored"] == ingest["spans_sent"] and ingest["failed"] == 0
    assert report["dashboard_queries"]["spans"] == 20_000
    peak = report["memory"]["under_load_peak"]
    assert peak["processes"] >= 5
    assert sum(g["count"] for g in peak["by_process"].values()) == peak["processes"]
    assert peak["pss_mb"] <= report["memory"]["under_load_peak_rss_mb"]
    figures = {t["figure"].split(",")[0].split(":")[0] for t in report["targets"]}
    assert {"telemetry overhead", "side-effects queue", "whole lab under load",
            "outbox relay", "same for N=500 (sweep"} <= figures  # fmt: skip
    assert {t["met"] for t in report["targets"]} <= {True, False, None}
    assert all(t["note"] for t in report["targets"] if t["met"] is False)
    for name in ("report.json", "report.md", "report.html"):
        assert (directory / name).stat().st_size > 0
    assert "plotly" in (directory / "report.html").read_text()[:200_000].lower()


def test_sigterm_stops_the_lab_the_bench_started(tmp_path: Path) -> None:
    env = _bench_environment(tmp_path)
    bench = subprocess.Popen(
        [sys.executable, "-m", "latency_lab.cli.main", "bench", "--quick"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab_file = tmp_path / "lab.json"
    deadline = time.monotonic() + 120
    while not lab_file.exists() and time.monotonic() < deadline and bench.poll() is None:
        time.sleep(0.2)
    assert lab_file.exists(), "the bench never started its lab"
    pids = list(json.loads(lab_file.read_text())["processes"].values())
    family = [psutil.Process(pid) for pid in pids]
    family += [child for parent in list(family) for child in parent.children(recursive=True)]

    bench.send_signal(signal.SIGTERM)
    bench.wait(timeout=60)
    _, alive = psutil.wait_procs(family, timeout=20)

    assert alive == [], f"left running: {[p.pid for p in alive]}"


def test_each_configuration_says_where_its_time_goes_from_profiles(
    quick_report: tuple[dict[str, Any], Path],
) -> None:
    report, directory = quick_report
    profiles = {c["name"]: c["profile"] for c in report["configurations"]}

    for name, profile in profiles.items():
        assert profile["profiles"] == report["plan"]["profiled_requests"], name
        assert sum(profile["ms"].values()) <= profile["duration_ms"] * 1.01
    # The N+1 is ORM work; served from L1 the ORM has nothing to do.
    assert profiles["all off"]["ms"]["SQLAlchemy"] > 0
    assert profiles["all on"]["ms"]["SQLAlchemy"] == 0
    assert "Where the service's time goes" in (directory / "report.md").read_text()


def test_the_queue_figures_count_every_job_the_reads_enqueued(
    quick_report: tuple[dict[str, Any], Path],
) -> None:
    report, _ = quick_report
    burst = report["queue"]["burst"]

    # Each uncached read with async_offload on enqueues exactly one analytics job.
    assert burst["arrivals"] == burst["requests"]
    assert burst["drain_s"] is not None, burst  # the queue emptied (how fast is a figure)
    for config in report["configurations"]:
        queue = config["queue"]
        toggles = config["toggles"]
        if toggles["async_offload"] and not toggles["edge_cache"]:  # an edge hit reaches no one
            assert queue["arrivals"] >= config["leads"]["requests"], config["name"]
        assert queue["drain_s"] is not None, config["name"]
    relay = report["relay"]
    assert relay["counted_by"] == "sqlalchemy" and relay["window_s"] > 0
