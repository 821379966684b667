"""The ``latency-lab`` command line: start the lab, seed it, flip its toggles, reshape its world.

::

    latency-lab up                                   # everything; the front door is :8000
    latency-lab up --no-dashboard --workers 2
    latency-lab status                               # the running lab's processes, restarts
    latency-lab seed --leads 20000 --reset
    latency-lab toggles                              # show the five switches
    latency-lab toggles eager_loading=on redis_cache=on
    latency-lab world db_round_trip_ms=2 analytics.latency_ms=50
    latency-lab load --requests 1000 --concurrency 8
    latency-lab bench --quick

``toggles`` and ``world`` talk to the running lab's admin API (``/admin/toggles``,
``/admin/world``): the service URL comes from ``--url``, else ``LAB_SERVICE_URL``, else the
running lab's ``var/lab.json``, else the default port. With ``LAB_ADMIN_TOKEN`` set, the token is
sent as ``X-Lab-Admin-Token``.

Mistakes in arguments or in ``LAB_*`` settings end with one line saying what is wrong and exit
code 2; an unreachable lab or a refused request exits with 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx
from pydantic import ValidationError
from tqdm import tqdm

from latency_lab.core.access import ADMIN_TOKEN_HEADER
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import Toggle, ToggleError, Toggles
from latency_lab.core.world import World, WorldError
from latency_lab.lab.runtime import READY_TIMEOUT_S, Lab, LabOptions, read_lab_info, redact_url

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class ConfigurationError(click.ClickException):
    """Settings from the environment that do not validate: a usage error (exit code 2)."""

    exit_code = 2


# --- settings ----------------------------------------------------------------------------------
def load_settings(**overrides: Any) -> Settings:
    """``Settings()`` from the environment (plus overrides), its errors turned into one line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {describe_settings_error(exc)}") from None


def describe_settings_error(exc: ValidationError) -> str:
    """``LAB_EDGE_PORT=99999: Input should be less than or equal to 65535``; several joined."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            name = _environment_name(str(error["loc"][0]))
            problems.append(f"{name}={error.get('input')}: {message.removeprefix(name + ' ')}")
        else:
            problems.append(message)
    return "; ".join(problems)


def _environment_name(field_or_alias: str) -> str:
    field = Settings.model_fields.get(field_or_alias)
    return field.alias if field is not None and field.alias else field_or_alias


# --- the group ---------------------------------------------------------------------------------
@click.group(context_settings=CONTEXT_SETTINGS)
def cli() -> None:
    """Latency Lab: an API taken from 500 ms to 50 ms, one switchable optimization at a time.

    \b
    Start here:
      latency-lab up                       start everything, open http://127.0.0.1:8000
      latency-lab toggles eager_loading=on fix the N+1 query, then watch the traces

    Settings come from the environment: LAB_VAR_DIR, LAB_HOST, LAB_EDGE_PORT, LAB_SERVICE_PORT,
    LAB_THIRDPARTY_PORT, LAB_DASHBOARD_PORT, LAB_DATABASE_URL, LAB_TRACE_STORE_URL, REDIS_URL,
    LAB_ADMIN_TOKEN, and the OTEL_* variables.
    """


# --- up ----------------------------------------------------------------------------------------
@cli.command()
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
    help="RQ worker processes for offloaded calls  [default: LAB_RQ_WORKERS, 2]",
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


# --- status ------------------------------------------------------------------------------------
@cli.command(short_help="Show the running lab's processes: state, PID, uptime, restarts.")
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
    click.echo(format_table(("process", "state", "pid", "uptime", "restarts", "last exit"), rows))
    click.echo("* essential: the lab stops if it cannot be kept running")
    troubled = [p for p in processes if p.state in ("down", "not responding")]
    for process in troubled:
        click.echo(
            f"{process.name} is {process.state}: see {info.log_dir}/{process.name}.log", err=True
        )
    if troubled:
        raise click.exceptions.Exit(3)


# --- seed --------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--leads", type=click.IntRange(min=0), default=5000, show_default=True, help="Number of leads."
)
@click.option(
    "--seed",
    "seed_value",
    type=int,
    default=42,
    show_default=True,
    help="Random seed: the same seed gives the same data set.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Number of users (lead owners).",
)
@click.option(
    "--tags", type=click.IntRange(min=1), default=30, show_default=True, help="Number of tags."
)
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL  [default: LAB_DATABASE_URL, else LAB_VAR_DIR/lab.db]",
)
@click.option("--reset", is_flag=True, help="Replace a different data set already there.")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
def seed(
    leads: int,
    seed_value: int,
    users: int,
    tags: int,
    database_url: str | None,
    reset: bool,
    progress: bool,
) -> None:
    """Fill the lead database with a deterministic data set.

    Idempotent: seeding again with the same numbers does nothing. A database seeded with other
    numbers is left alone unless --reset is given.

    \b
    Examples:
      latency-lab seed
      latency-lab seed --leads 20000 --seed 7 --reset
      latency-lab seed --database-url postgresql+psycopg://lab:lab@localhost/lab
    """
    from sqlalchemy.exc import ArgumentError  # heavy imports: only when seeding

    from latency_lab.seed.seeding import SeedConflict, seed_database

    url = database_url or _default_database_url()
    try:
        report = seed_database(
            url,
            leads=leads,
            users=users,
            tags=tags,
            seed=seed_value,
            progress=progress,
            reset=reset,
        )
    except ArgumentError as exc:  # not a URL SQLAlchemy can use
        raise click.BadParameter(str(exc), param_hint="'--database-url'") from None
    except SeedConflict as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # a bad URL or an unreachable database: its own words help most
        raise click.ClickException(f"could not seed {redact_url(url)}: {exc}") from None
    verb = "seeded" if report.created else "already seeded, nothing to do"
    click.echo(
        f"{verb}: {report.leads} leads, {report.users} users, {report.tags} tags "
        f"in {redact_url(url)}"
    )


def _default_database_url() -> str:
    settings = load_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return settings.resolved_database_url


# --- toggles and world -------------------------------------------------------------------------
_URL_HELP = "The lab's service (or edge) URL  [default: LAB_SERVICE_URL, else the running lab's]"


@cli.command(short_help="Show or switch the five optimization toggles.")
@click.argument("changes", nargs=-1, metavar="[NAME=on|off]...")
@click.option("--url", default=None, metavar="URL", help=_URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the lab's JSON answer as is.")
def toggles(changes: tuple[str, ...], url: str | None, as_json: bool) -> None:
    """Show the five optimization toggles of the running lab, or switch some.

    Toggles: eager_loading, redis_cache, app_cache, edge_cache, async_offload (all off is the
    article's "before"). Values: on/off (also true/false, 1/0, yes/no). A change reaches every
    process of the lab within a second.

    \b
    Examples:
      latency-lab toggles
      latency-lab toggles eager_loading=on
      latency-lab toggles eager_loading=on redis_cache=on async_offload=on
      latency-lab toggles eager_loading=off,edge_cache=on
    """
    body = parse_toggle_changes(changes)
    answer = _admin_call("PUT" if body else "GET", "/admin/toggles", body, url)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    states = _unwrap(answer, "toggles")
    rows = [(t.value, "on" if states[t.value] else "off") for t in Toggle if t.value in states]
    click.echo(format_table(("toggle", "state"), rows) if rows else json.dumps(answer, indent=2))


@cli.command(short_help="Show or change the simulated world: latencies, failure rates.")
@click.argument("changes", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--url", default=None, metavar="URL", help=_URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the lab's JSON answer as is.")
def world(changes: tuple[str, ...], url: str | None, as_json: bool) -> None:
    """Show the simulated world around the service, or change it.

    Keys: db_round_trip_ms (injected per database statement), third_party_timeout_s, and for each
    provider (email, analytics, enrichment): PROVIDER.latency_ms, PROVIDER.jitter_ms,
    PROVIDER.failure_rate (0..1). Values are numbers.

    \b
    Examples:
      latency-lab world
      latency-lab world db_round_trip_ms=2
      latency-lab world db_round_trip_ms=0.5 analytics.latency_ms=50 email.failure_rate=0.1
    """
    body = parse_world_changes(changes)
    answer = _admin_call("PUT" if body else "GET", "/admin/world", body, url)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [(key, _number(value)) for key, value in _flatten(_unwrap(answer, "world")).items()]
    click.echo(format_table(("setting", "value"), rows))


@cli.command(short_help="Drive load at the lab: a realistic mix, with a progress bar.")
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
        _bad_argument(str(exc))
    with tqdm(total=count, unit="req", desc="load") as bar:
        report = LoadGenerator(spec, on_sample=lambda _sample: bar.update(1)).run()
    summary = report.summary()
    if summary["requests"] and summary["errors"] == summary["requests"]:
        raise click.ClickException(
            f"every request to {spec.base_url} failed: is the lab running (`latency-lab up`)?"
        )
    rows = [[key, _number(value) if value is not None else "-"] for key, value in summary.items()]
    click.echo(format_table(["figure", "value"], rows))


@cli.command(short_help="Reproduce the article's table side by side; measure the lab's costs.")
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
    of list sizes for lazy, joined and selectin loading, and the lab's own costs (telemetry
    overhead, trace-store ingest, dashboard queries on a large store, memory).

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


def parse_toggle_changes(changes: Iterable[str]) -> dict[str, bool]:
    """``["eager_loading=on", "redis_cache=off,app_cache=on"]`` -> ``{name: bool}``."""
    parsed: dict[str, bool] = {}
    for part in (p.strip() for change in changes for p in change.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            _bad_argument(f"expected NAME=on|off, got {part!r} (toggles: {_toggle_names()})")
        try:
            toggles = Toggles.parse_override(part, base=Toggles())
        except ToggleError as exc:
            _bad_argument(str(exc))
        parsed[name.strip()] = toggles.enabled(Toggle(name.strip()))
    return parsed


def parse_world_changes(changes: Iterable[str]) -> dict[str, Any]:
    """``["db_round_trip_ms=2", "analytics.latency_ms=50"]`` -> the nested partial world."""
    known = World.model_validate({}).flat()
    nested: dict[str, Any] = {}
    for change in changes:
        key, sep, raw = (s.strip() for s in change.partition("="))
        if not sep or not key:
            _bad_argument(f"expected KEY=VALUE, got {change!r}")
        if key not in known:
            _bad_argument(f"unknown world setting {key!r}; known: {', '.join(known)}")
        try:
            value = float(raw)
        except ValueError:
            _bad_argument(f"{key}: expected a number, got {raw!r}")
        provider, _, name = key.rpartition(".")
        (nested.setdefault(provider, {}) if provider else nested)[name] = value
    try:
        World.from_json(nested, base=World.model_validate({}))
    except WorldError as exc:
        _bad_argument(str(exc))
    return nested


def _bad_argument(message: str) -> NoReturn:
    raise click.UsageError(message)


def _toggle_names() -> str:
    return ", ".join(t.value for t in Toggle)


# --- the outbox ---------------------------------------------------------------------------------
@cli.command(short_help="Show where the writes' side effects stand (the transactional outbox).")
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL  [default: LAB_DATABASE_URL, else LAB_VAR_DIR/lab.db]",
)
@click.option(
    "--failed",
    "show_failed",
    is_flag=True,
    help="Also list the side effects given up on, with their last error.",
)
def outbox(database_url: str | None, show_failed: bool) -> None:
    """Count the side effects of writes (email, analytics, enrichment) by state.

    \b
    pending     stored with the lead, not yet on the queue: Redis was down, or an inline
                email or enrichment failed and waits for a worker; the outbox relay
                enqueues them when due
    dispatched  on the RQ queue (retried with backoff by RQ)
    delivered   the provider accepted it
    failed      RQ gave up after its retries (see RQ's failed-job registry)
    dropped     an analytics event whose inline call failed (best-effort)

    \b
    Examples:
      latency-lab outbox
      latency-lab outbox --failed
    """
    from sqlalchemy import select

    from latency_lab.service import outbox as side_effects
    from latency_lab.service.db import build_engine, session_factory
    from latency_lab.service.models import OutboxEvent, OutboxState

    url = database_url or _default_database_url()
    engine = build_engine(url)
    try:
        with session_factory(engine)() as session:
            counts = side_effects.counts(session=session)
            failed = session.execute(
                select(OutboxEvent.created_at, OutboxEvent.task, OutboxEvent.last_error)
                .where(OutboxEvent.state == OutboxState.FAILED.value)
                .order_by(OutboxEvent.id.desc()).limit(50)
            ).all() if show_failed else []  # fmt: skip
    except Exception as exc:  # an unreachable or unseeded database: its own words help most
        raise click.ClickException(
            f"could not read the outbox in {redact_url(url)}: {exc}"
        ) from None
    finally:
        engine.dispose()
    click.echo(format_table(("state", "side effects"), [(k, str(n)) for k, n in counts.items()]))
    for created_at, task, error in failed:
        click.echo(f"{created_at:%Y-%m-%d %H:%M:%S}  {task}: {error}")


# --- talking to the admin API ------------------------------------------------------------------
def _admin_call(method: str, path: str, body: dict[str, Any], url: str | None) -> Any:
    settings = load_settings()
    base = (url or _running_service_url(settings)).rstrip("/")
    headers = {ADMIN_TOKEN_HEADER: settings.admin_token} if settings.admin_token else {}
    try:
        response = httpx.request(
            method,
            base + path,
            json=body if method == "PUT" else None,
            headers=headers,
            timeout=10.0,
        )
    except httpx.TransportError as exc:
        raise click.ClickException(
            f"no lab answers at {base} ({type(exc).__name__}): start one with `latency-lab up`, "
            "or point --url at a running lab"
        ) from None
    if response.status_code in (401, 403):
        raise click.ClickException(
            f"the lab at {base} refused the admin request ({response.status_code}): set "
            "LAB_ADMIN_TOKEN to the lab's admin token"
        )
    if response.is_error:
        raise click.ClickException(
            f"{method} {base}{path} failed ({response.status_code}): {_error_text(response)}"
        )
    try:
        return response.json()
    except ValueError:
        raise click.ClickException(f"{base}{path} did not answer JSON: is it the lab?") from None


def _running_service_url(settings: Settings) -> str:
    if settings.service_url:
        return settings.service_url
    info = read_lab_info(settings)
    if info is not None and "service" in info.urls:
        return info.urls["service"]
    return settings.resolved_service_url


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "description"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return json.dumps(body)[:300]


def _unwrap(answer: Any, key: str) -> dict[str, Any]:
    """The admin API's object, whether sent bare or as ``{"toggles": {...}}``."""
    if isinstance(answer, dict) and isinstance(answer.get(key), dict):
        inner: dict[str, Any] = answer[key]
        return inner
    return answer if isinstance(answer, dict) else {}


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def main(args: Sequence[str] | None = None) -> None:
    """The ``latency-lab`` console script."""
    cli(args=args, prog_name="latency-lab")


if __name__ == "__main__":
    main()
