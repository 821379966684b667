"""deploy/nginx/lab-edge.conf: nginx accepts it, and its directives encode the edge contract.

``nginx -t`` runs where nginx is installed (skipped otherwise). The other tests read the file with
crossplane (nginx's configuration parser for Python), so they run everywhere: the directives that
decide what is cached and for how long, and the ``map`` blocks that turn nginx's cache status into
the lab's ``X-Cache`` and ``Server-Timing``, evaluated as nginx evaluates them, against the same
table and the same constants as the embedded edge (edge/).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from latency_lab.core.access import ADMIN_TOKEN_HEADER
from latency_lab.core.toggles import CONFIG_HEADER, TOGGLE_HEADER, Toggles
from latency_lab.edge.app import (
    CACHEABLE_METHODS,
    EDGE_ONLY_TIMING,
    HIT_TIMING,
    MISS_TIMING,
    UPSTREAM_TIMEOUT,
)
from tests.deploy import nginx_edge
from tests.deploy.compose_file import load_compose
from tests.deploy.edge_contract import NGINX_VERDICTS, Verdict


def _variable(prefix: str, header: str) -> str:
    """nginx's variable for a header: ``X-Lab-Toggles`` -> ``$http_x_lab_toggles``."""
    return f"${prefix}{header.lower().replace('-', '_')}"


TOGGLES = _variable("http_", TOGGLE_HEADER)
ADMIN_TOKEN = _variable("http_", ADMIN_TOKEN_HEADER)
CONFIG = _variable("upstream_http_", CONFIG_HEADER)


@pytest.fixture(scope="module")
def config() -> list[dict[str, Any]]:
    return nginx_edge.parsed_config()


def _one(directives: list[dict[str, Any]], name: str) -> list[str]:
    found = nginx_edge.find(directives, name)
    assert len(found) == 1, f"{name}: expected once, found {len(found)} times"
    args: list[str] = found[0]["args"]
    return args


def _location(config: list[dict[str, Any]], *args: str) -> list[dict[str, Any]]:
    block: list[dict[str, Any]] = next(
        d["block"] for d in nginx_edge.find(config, "location") if d["args"] == list(args)
    )
    return block


def _map(config: list[dict[str, Any]], variable: str) -> tuple[str, list[tuple[str, str]]]:
    directive = next(d for d in nginx_edge.find(config, "map") if d["args"][1] == variable)
    return directive["args"][0], [(e["directive"], " ".join(e["args"])) for e in directive["block"]]


def evaluate_map(entries: list[tuple[str, str]], value: str) -> str:
    """As nginx does: exact strings first, then regular expressions in order, then default."""
    exact = {k: v for k, v in entries if not k.startswith("~") and k != "default"}
    if value in exact:
        return exact[value]
    for key, result in entries:
        if key.startswith("~*") and re.search(key[2:], value, re.IGNORECASE):
            return result
        if key.startswith("~") and not key.startswith("~*") and re.search(key[1:], value):
            return result
    return dict(entries).get("default", "")


# --- nginx itself -------------------------------------------------------------------------------
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    binary = nginx_edge.nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx): directives checked only")
    main = nginx_edge.render(tmp_path, upstream="127.0.0.1:8001", port=18000)

    checked = nginx_edge.check(binary, main)

    assert checked.returncode == 0, checked.stderr


# --- what is cached, and for how long -----------------------------------------------------------
def test_only_the_services_cache_control_decides(config: list[dict[str, Any]]) -> None:
    proxied = _location(config, "/")
    zone = _one(config, "proxy_cache_path")

    assert f"keys_zone={_one(proxied, 'proxy_cache')[0]}:10m" in zone
    assert set(_one(proxied, "proxy_cache_methods")) == CACHEABLE_METHODS
    assert _one(proxied, "proxy_cache_convert_head") == ["off"]  # HEAD apart from GET
    assert _one(proxied, "proxy_cache_revalidate") == ["on"]  # If-None-Match when stale
    # No lifetime of nginx's own, no upstream header ignored, nothing stale served.
    for overriding in (
        "proxy_cache_valid",
        "proxy_ignore_headers",
        "proxy_cache_use_stale",
        "proxy_cache_bypass",
        "proxy_no_cache",
    ):
        assert nginx_edge.find(config, overriding) == [], overriding


def test_the_key_holds_the_method_and_the_pinned_configuration(
    config: list[dict[str, Any]],
) -> None:
    proxied = _location(config, "/")
    (key,) = _one(proxied, "proxy_cache_key")
    source, entries = _map(config, "$lab_override")

    assert key.startswith("$request_method ") and "$request_uri" in key
    assert key.endswith(" $lab_override")
    assert ["X-Lab-Toggles", "$lab_override"] in [
        d["args"] for d in nginx_edge.find(proxied, "proxy_set_header")
    ]
    # The override counts only with a token (which the service then checks), as at the
    # embedded edge, where only an admin's override is forwarded.
    assert source == f"$http_authorization{ADMIN_TOKEN}"
    assert evaluate_map(entries, "") == ""
    assert evaluate_map(entries, "Bearer s3cret") == TOGGLES


# --- what the headers say -----------------------------------------------------------------------
@pytest.mark.parametrize(("cache_status", "configuration", "verdict"), NGINX_VERDICTS)
def test_x_cache_is_the_embedded_edges_verdict(
    config: list[dict[str, Any]],
    cache_status: str,
    configuration: Toggles | None,
    verdict: Verdict,
) -> None:
    source, entries = _map(config, "$lab_edge_outcome")
    assert source == f"$upstream_cache_status {CONFIG}"
    label = configuration.label() if configuration is not None else ""

    assert evaluate_map(entries, f"{cache_status} {label}") == verdict


def test_server_timing_and_traceresponse_as_the_embedded_edge_writes_them(
    config: list[dict[str, Any]],
) -> None:
    proxied = _location(config, "/")
    _, timing = _map(config, "$lab_server_timing")
    _, trace = _map(config, "$lab_traceresponse")
    hidden = {d["args"][0] for d in nginx_edge.find(proxied, "proxy_hide_header")}
    added = {d["args"][0]: d["args"][1:] for d in nginx_edge.find(proxied, "add_header")}

    assert evaluate_map(timing, Verdict.HIT) == HIT_TIMING
    assert evaluate_map(timing, Verdict.MISS) == f"$upstream_http_server_timing, {MISS_TIMING}"
    assert evaluate_map(timing, Verdict.BYPASS) == "$upstream_http_server_timing"
    assert evaluate_map(trace, Verdict.HIT) == ""  # an empty add_header sends nothing
    assert evaluate_map(trace, Verdict.MISS) == "$upstream_http_traceresponse"
    assert hidden == {"Server-Timing", "traceresponse"}
    assert added == {
        "X-Cache": ["$lab_edge_outcome", "always"],
        "Server-Timing": ["$lab_server_timing", "always"],
        "traceresponse": ["$lab_traceresponse", "always"],
    }


def test_errors_and_timeouts_match_the_embedded_edge(config: list[dict[str, Any]]) -> None:
    proxied = _location(config, "/")

    assert _one(proxied, "proxy_connect_timeout") == [f"{UPSTREAM_TIMEOUT.connect:g}s"]
    assert _one(proxied, "proxy_read_timeout") == [f"{UPSTREAM_TIMEOUT.read:g}s"]
    for name, status, error in (
        ("@service_unavailable", "502", "service unavailable"),
        ("@service_timed_out", "504", "service timed out"),
    ):
        block = _location(config, name)
        assert _one(block, "add_header") == ["Server-Timing", EDGE_ONLY_TIMING, "always"]
        returned = _one(block, "return")
        assert returned[0] == status and f'"error":"{error}"' in returned[1]


def test_the_compose_healthcheck_asks_the_edges_own_health_endpoint(
    config: list[dict[str, Any]],
) -> None:
    probe = load_compose()["services"]["edge"]["healthcheck"]["test"]
    path = re.sub(r"^http://[^/]+", "", probe[-1])

    assert _location(config, "=", path)
    assert path == "/edge/healthz"  # the embedded edge's health endpoint, too
