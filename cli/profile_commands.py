"""``latency-lab profile``: where a request's application time went, function by function.

``latency-lab profile TRACE_ID`` reads the profiles of a profiled request (and of its background
jobs) from the trace store; ``latency-lab profile --url /api/leads?limit=100 --toggles ...``
sends a fresh request with ``X-Lab-Profile: on`` first. Either way it prints the functions with
the most self time and the time per group of code, and writes each profile as a speedscope file
(open it at speedscope.app, or import it elsewhere).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from latency_lab.cli.errors import bad_argument, load_settings
from latency_lab.cli.tables import format_table
from latency_lab.core.admin_client import AdminClient, AdminError
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import PROFILE_HEADER, ToggleError, Toggles
from latency_lab.lab.runtime import read_lab_info
from latency_lab.telemetry.profiles import Profile

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
ARRIVAL_TIMEOUT_S = 15.0


@click.command(short_help="Where a request's application time goes: its profile, by function.")
@click.argument("trace_id", required=False)
@click.option(
    "--url",
    default=None,
    metavar="PATH|URL",
    help="Profile a fresh GET of this path at the running lab's service (or this URL).",
)
@click.option(
    "--toggles",
    "pinned",
    default=None,
    metavar="NAME=on|off,...",
    help="With --url: the configuration of that request (X-Lab-Toggles).",
)
@click.option(
    "--top",
    type=click.IntRange(1, 200),
    default=15,
    show_default=True,
    help="How many functions to list, by self time.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the speedscope files  [default: LAB_VAR_DIR/profiles]",
)
def profile(
    trace_id: str | None, url: str | None, pinned: str | None, top: int, out: Path | None
) -> None:
    """Print a profiled request's top functions and write its speedscope profiles.

    \b
    Examples:
      latency-lab profile 4bf92f3577b34da6a3ce929d0e0e4736
      latency-lab profile --url '/api/leads?limit=100' --toggles eager_loading=on,async_offload=on
    """
    settings = load_settings()
    if (trace_id is None) == (url is None):
        bad_argument("give a TRACE_ID, or --url to profile a fresh request (not both)")
    if trace_id is not None and not TRACE_ID.match(trace_id.lower()):
        bad_argument(f"{trace_id!r} is not a trace id: 32 hexadecimal digits, as in traceresponse")
    if pinned is not None and url is None:
        bad_argument("--toggles goes with --url")
    if url is not None:
        trace_id = _profile_fresh_request(settings, url, pinned)
    assert trace_id is not None
    found = _wait_for_profiles(settings, trace_id.lower(), wait=url is not None)
    folder = out or settings.var_dir / "profiles"
    for row in found:
        _report(row, top, folder)


def _profile_fresh_request(settings: Settings, url: str, pinned: str | None) -> str:
    """A fresh, profiled GET at the service (never an edge cache hit, which runs no service)."""
    if not url.startswith(("/", "http://", "https://")):
        bad_argument(f"--url {url!r}: give a path starting with / (or a whole URL)")
    configuration = Toggles().label()
    if pinned is not None:
        try:
            configuration = Toggles.parse_override(pinned, base=Toggles()).label()
        except ToggleError as exc:
            bad_argument(str(exc))
    base, target = _split(url, settings)
    with AdminClient.from_settings(settings, base_url=base, url_hint="--url") as client:
        try:
            return client.profiled_get(target, configuration)
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None


def _split(url: str, settings: Settings) -> tuple[str, str]:
    """(the service's base URL, path and query) from ``--url``."""
    if url.startswith("/"):
        info = read_lab_info(settings)
        return (info.urls.get("service") if info else None) or settings.resolved_service_url, url
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{parts.scheme}://{parts.netloc}", target or "/"


def _wait_for_profiles(settings: Settings, trace_id: str, *, wait: bool) -> list[dict[str, Any]]:
    """The trace's profiles (the request's first); spans reach the store within a second."""
    from latency_lab.telemetry.store import TraceStore

    store = TraceStore(settings.resolved_trace_store_url).create()  # a fresh store reads empty
    try:
        deadline = time.monotonic() + (ARRIVAL_TIMEOUT_S if wait else 0)
        while True:
            found = store.trace_profiles(trace_id)
            if found or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if found:
            return found
        if not store.trace_spans(trace_id):
            raise click.ClickException(
                f"no trace {trace_id} in the trace store ({_store_name(settings)}): check the "
                "id (traceresponse), or it was trimmed by retention"
            )
        raise click.ClickException(
            f"trace {trace_id} was not profiled: send the request with '{PROFILE_HEADER}: on', "
            "or run latency-lab profile --url PATH"
        )
    finally:
        store.close()


def _store_name(settings: Settings) -> str:
    url = settings.resolved_trace_store_url
    return url.rsplit("@", 1)[-1] if "@" in url else url


def _report(row: dict[str, Any], top: int, folder: Path) -> None:
    try:
        loaded = Profile.loads(str(row["document"]))
    except ValueError as exc:
        raise click.ClickException(f"the stored profile of span {row['span_id']}: {exc}") from None
    functions = loaded.self_times()[:top]
    whole = loaded.duration_ms or 1.0
    click.echo(f"\n{row['service']}: {row['name']} ({loaded.duration_ms:,.1f} ms profiled)")
    click.echo(
        format_table(
            ["self ms", "share", "code", "function", "where"],
            [
                [f"{f.self_ms:,.2f}", f"{f.self_ms / whole:.0%}", f.group.value, f.name, f.where]
                for f in functions
            ],
        )
    )
    groups = [f"{g.value} {ms:,.1f} ms" for g, ms in loaded.by_group().items() if ms > 0]
    click.echo("By code: " + ", ".join(groups))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{row['trace_id']}-{row['span_id']}.speedscope.json"
    path.write_text(loaded.dumps())
    click.echo(f"Wrote {path} (open it at https://www.speedscope.app)")
