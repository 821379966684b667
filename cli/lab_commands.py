"""``latency-lab up`` and ``latency-lab status``: run the whole lab here, and look at it running.

The supervisor itself is :class:`latency_lab.lab.runtime.Lab`; these commands only turn its options
into flags and its state into a table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from latency_lab.cli.errors import load_settings
from latency_lab.cli.tables import format_table
from latency_lab.lab.runtime import READY_TIMEOUT_S, Lab, LabOptions, read_lab_info

if TYPE_CHECKING:
    from latency_lab.lab.lab_info import ProcessStatus


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Gunicorn worker processes for the service  [default: LAB_SERVICE_WORKERS, 4]",
)
@click.option(
    "--rq-workers",
    type=click.IntRange(0, 64),
    default=None,
    help="RQ worker processes, each running LAB_RQ_CONCURRENCY jobs at once  "
    "[default: LAB_RQ_WORKERS, 1]",
)
@click.option("--no-dashboard", is_flag=True, help="Do not start the Streamlit dashboard.")
@click.option(
    "--seed-leads",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="Leads to seed when the database is empty (an existing data set is kept).",
)
@click.option(
    "--ready-timeout",
    type=click.FloatRange(min=1),
    default=READY_TIMEOUT_S,
    show_default=True,
    help="Seconds each process may take to answer its health check.",
)
@click.pass_context
def up(
    ctx: click.Context,
    workers: int | None,
    rq_workers: int | None,
    no_dashboard: bool,
    seed_leads: int,
    ready_timeout: float,
) -> None:
    """Start the whole lab here and serve until Ctrl-C.

    Starts Redis (unless REDIS_URL is set), seeds the database if it is empty, then the
    third-party simulator, the service, the RQ workers, the edge and the dashboard; prints their
    URLs and waits. A process that dies is started again (with backoff); one that keeps dying
    (5 exits within 60 s) is given up on, and if it is the service, the edge or Redis the lab
    stops and exits 1. Ctrl-C (or SIGTERM) stops every process and exits 0. Logs are in
    LAB_VAR_DIR/log; the running lab's URLs, PIDs and restarts are in LAB_VAR_DIR/lab.json
    (`latency-lab status` prints them).

    \b
    Examples:
      latency-lab up
      latency-lab up --no-dashboard --workers 1 --rq-workers 1 --seed-leads 500
      LAB_EDGE_PORT=9000 latency-lab up
      LAB_HOST=0.0.0.0 LAB_ADMIN_TOKEN=s3cret latency-lab up   # reachable from other machines
    """
    overrides = {"service_workers": workers, "rq_workers": rq_workers}
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    options = LabOptions(
        dashboard=not no_dashboard, seed_leads=seed_leads, ready_timeout_s=ready_timeout
    )
    lab = Lab(settings, options, say=click.echo, warn=lambda message: click.echo(message, err=True))
    ctx.exit(lab.run())


@click.command(short_help="Show the running lab's processes: state, PID, uptime, restarts.")
def status() -> None:
    """Print each process of the lab running from LAB_VAR_DIR: its state (up, restarting,
    not responding, down), PID, uptime, restarts and last exit. Exits 1 when no lab runs there,
    and 3 when a process is down or not responding.

    \b
    Examples:
      latency-lab status
      LAB_VAR_DIR=/tmp/lab2/var latency-lab status
    """
    from latency_lab.lab.lab_info import format_duration, process_statuses

    settings = load_settings()
    info = read_lab_info(settings)
    if info is None:
        raise click.ClickException(
            f"no lab is running from {settings.var_dir} (no live {settings.var_dir / 'lab.json'}):"
            " start one with `latency-lab up`, or set LAB_VAR_DIR to that lab's folder"
        )
    processes = process_statuses(info)
    click.echo(
        f"Latency Lab (pid {info.pid}) up {format_duration(time.time() - info.started_at)}"
        f", front door {info.urls.get('edge')}, logs in {info.log_dir}"
    )
    click.echo(_process_table(processes))
    click.echo("* essential: the lab stops if it cannot be kept running")
    troubled = [p for p in processes if p.state in ("down", "not responding")]
    for process in troubled:
        click.echo(
            f"{process.name} is {process.state}: see {info.log_dir}/{process.name}.log", err=True
        )
    if troubled:
        raise click.exceptions.Exit(3)


def _process_table(processes: Sequence[ProcessStatus]) -> str:
    rows = [
        (
            p.name + (" *" if p.essential else ""),
            p.state,
            str(p.pid),
            p.uptime,
            str(p.restarts),
            p.last_exit or "-",
        )
        for p in processes
    ]
    return format_table(("process", "state", "pid", "uptime", "restarts", "last exit"), rows)
