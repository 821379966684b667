"""``latency-lab load`` and ``latency-lab bench``: drive traffic at the lab and measure it.

``load`` sends a mix of requests to the running lab's front door (the edge) with a progress bar;
``bench`` reproduces the article's table, starting a lab when none runs.
"""

from __future__ import annotations

from pathlib import Path

import click
import httpx
from tqdm import tqdm

from latency_lab.cli.errors import bad_argument, load_settings
from latency_lab.cli.tables import format_number, format_table
from latency_lab.core.settings import Settings
from latency_lab.lab.runtime import read_lab_info


@click.command(short_help="Drive load at the lab: a realistic mix, with a progress bar.")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Where to send requests  [default: the running lab's edge, the front door]",
)
@click.option(
    "--requests",
    "count",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Requests to send in all.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Requests per second (default: as fast as the lab answers).",
)
@click.option(
    "--mix",
    default=None,
    metavar="ENDPOINT=WEIGHT,...",
    help="Endpoint weights, e.g. list=70,detail=20,stats=10 "
    "(endpoints: list, detail, create, stats, static).",
)
@click.option(
    "--toggles",
    "pinned",
    default=None,
    metavar="NAME=on|off,...",
    help="Pin a configuration for these requests only (X-Lab-Toggles).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=100,
    show_default=True,
    help="Leads per list request.",
)
def load(
    url: str | None,
    count: int,
    concurrency: int,
    rate: float | None,
    mix: str | None,
    pinned: str | None,
    limit: int,
) -> None:
    """Send a mix of requests and print what they cost (from their Server-Timing headers).

    \b
    Examples:
      latency-lab load
      latency-lab load --requests 2000 --concurrency 8 --mix list=1
      latency-lab load --toggles eager_loading=on,redis_cache=on --rate 50
    """
    from latency_lab.lab.loadgen import DEFAULT_MIX, LoadError, LoadGenerator, LoadSpec, parse_mix

    settings = load_settings()
    try:
        spec = LoadSpec(
            base_url=(url or _running_edge_url(settings)).rstrip("/"),
            requests=count,
            concurrency=concurrency,
            rate_per_s=rate,
            mix=parse_mix(mix) if mix else dict(DEFAULT_MIX),
            list_limit=limit,
            toggles=pinned,
            admin_token=settings.admin_token,
        )
    except LoadError as exc:
        bad_argument(str(exc))
    with tqdm(total=count, unit="req", desc="load") as bar:
        report = LoadGenerator(spec, on_sample=lambda _sample: bar.update(1)).run()
    summary = report.summary()
    if summary["requests"] and summary["errors"] == summary["requests"]:
        raise click.ClickException(
            f"every request to {spec.base_url} failed: is the lab running (`latency-lab up`)?"
        )
    rows = [
        [key, format_number(value) if value is not None else "-"] for key, value in summary.items()
    ]
    click.echo(format_table(["figure", "value"], rows))


@click.command(short_help="Reproduce the article's table side by side; measure the lab's costs.")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Measure a lab at this URL instead of the embedded one (skips the costs that "
    "need local processes).",
)
@click.option("--quick", is_flag=True, help="A smoke run of a minute or so (few requests).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where reports go  [default: LAB_VAR_DIR/bench]",
)
def bench(url: str | None, quick: bool, out_dir: Path | None) -> None:
    """Measure every configuration in one run and write Markdown, JSON and HTML reports.

    Uses the running lab, or starts one (and stops it afterwards). Configurations: all off (the
    article's "before"), each toggle alone, the toggles added in the article's order, all on;
    each gets a warm-up, then a realistic mix and GET /api/leads?limit=100 alone. Then a sweep
    of list sizes for every loader (lazy, joined, selectin, rows, json), and the lab's own
    costs (telemetry overhead, trace-store ingest, dashboard queries on a large store, memory).

    \b
    Examples:
      latency-lab bench --quick
      latency-lab bench                      # the README's figures; several minutes
      latency-lab bench --url http://127.0.0.1:8000
    """
    from latency_lab.benchmarks.run import run_bench
    from latency_lab.lab.runtime import LabError

    settings = load_settings()
    try:
        report, paths = run_bench(
            settings,
            url=url,
            quick=quick,
            out_dir=out_dir or settings.var_dir / "bench",
            say=click.echo,
        )
    except (LabError, httpx.HTTPError) as exc:
        raise click.ClickException(f"bench could not run: {exc}") from None
    for row in report["article"]:
        click.echo(f"{row['row']}: article {row['article']}, measured {row['measured']}")
    missed = [t["figure"] for t in report["targets"] if t["met"] is False]
    if missed:
        click.echo("targets missed (the report says why): " + "; ".join(missed))
    click.echo("reports: " + ", ".join(str(path) for path in paths))


def _running_edge_url(settings: Settings) -> str:
    info = read_lab_info(settings)
    if info is not None and "edge" in info.urls:
        return info.urls["edge"]
    return settings.edge_url
