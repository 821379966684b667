"""``latency-lab toggles`` and ``latency-lab world``: the lab's shared state, shown or changed.

Arguments are checked here, against the same models the lab validates with, so a typo fails
(exit code 2) before the lab is called. The calls go through the one admin client,
:class:`latency_lab.core.admin_client.AdminClient`, to the service found by ``--url``, else
``LAB_SERVICE_URL``, else the running lab's ``var/lab.json``, else the default port; with
``LAB_ADMIN_TOKEN`` set, the token is sent as ``X-Lab-Admin-Token``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

from latency_lab.cli.errors import bad_argument, load_settings
from latency_lab.cli.tables import format_number, format_table
from latency_lab.core.admin_client import AdminClient, AdminError
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import Toggle, ToggleError, Toggles
from latency_lab.core.world import World, WorldError
from latency_lab.lab.runtime import read_lab_info

_URL_HELP = "The lab's service (or edge) URL  [default: LAB_SERVICE_URL, else the running lab's]"


@click.command(short_help="Show or switch the five optimization toggles.")
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


@click.command(short_help="Show or change the simulated world: latencies, failure rates.")
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
    rows = [
        (key, format_number(value)) for key, value in _flatten(_unwrap(answer, "world")).items()
    ]
    click.echo(format_table(("setting", "value"), rows))


def parse_toggle_changes(changes: Iterable[str]) -> dict[str, bool]:
    """``["eager_loading=on", "redis_cache=off,app_cache=on"]`` -> ``{name: bool}``."""
    parsed: dict[str, bool] = {}
    for part in (p.strip() for change in changes for p in change.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            bad_argument(f"expected NAME=on|off, got {part!r} (toggles: {_toggle_names()})")
        try:
            toggles = Toggles.parse_override(part, base=Toggles())
        except ToggleError as exc:
            bad_argument(str(exc))
        parsed[name.strip()] = toggles.enabled(Toggle(name.strip()))
    return parsed


def parse_world_changes(changes: Iterable[str]) -> dict[str, Any]:
    """``["db_round_trip_ms=2", "analytics.latency_ms=50"]`` -> the nested partial world."""
    known = World.model_validate({}).flat()
    nested: dict[str, Any] = {}
    for change in changes:
        key, sep, raw = (s.strip() for s in change.partition("="))
        if not sep or not key:
            bad_argument(f"expected KEY=VALUE, got {change!r}")
        if key not in known:
            bad_argument(f"unknown world setting {key!r}; known: {', '.join(known)}")
        try:
            value = float(raw)
        except ValueError:
            bad_argument(f"{key}: expected a number, got {raw!r}")
        provider, _, name = key.rpartition(".")
        (nested.setdefault(provider, {}) if provider else nested)[name] = value
    try:
        World.from_json(nested, base=World.model_validate({}))
    except WorldError as exc:
        bad_argument(str(exc))
    return nested


def _toggle_names() -> str:
    return ", ".join(t.value for t in Toggle)


# --- talking to the admin API ------------------------------------------------------------------
def _admin_call(method: str, path: str, body: dict[str, Any], url: str | None) -> Any:
    """The lab's JSON answer; a failure ends the command with the client's one-line message."""
    settings = load_settings()
    base_url = url or _running_service_url(settings)
    try:
        with AdminClient.from_settings(settings, base_url=base_url, url_hint="--url") as client:
            return client.request(method, path, body if method == "PUT" else None)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


def _running_service_url(settings: Settings) -> str:
    if settings.service_url:
        return settings.service_url
    info = read_lab_info(settings)
    if info is not None and "service" in info.urls:
        return info.urls["service"]
    return settings.resolved_service_url


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
