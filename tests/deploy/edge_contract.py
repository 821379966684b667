"""What the lab's edge promises, whichever edge it is: the embedded one (edge/) or nginx
(deploy/nginx/lab-edge.conf).

For the lab's purposes the two behave the same: which responses are cached, for how long, and
which headers say a hit. Each scenario below is a run of requests at the front door, with what
the edge must answer (``X-Cache``) and whether the request reached the service;
tests/deploy/test_edge_contract.py runs every scenario against both edges in front of the real
lead service, and tests/deploy/test_nginx_config.py checks the nginx directives that encode it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from latency_lab.core.toggles import Toggles

# The service runs with this s-maxage for API responses (LAB_EDGE_MAX_AGE); static assets have
# their own (300 s). Short, so that expiry is part of the contract tests. Freshness is counted in
# whole seconds (nginx's clock, the Date header): an entry stays fresh at least s-maxage - 1 s,
# and is stale a little more than a second after s-maxage.
EDGE_MAX_AGE_S = 3
EXPIRY_WAIT_S = EDGE_MAX_AGE_S + 1.3
ADMIN_TOKEN = "edge-contract-token"


class Verdict(StrEnum):
    """``X-Cache``: what the edge did."""

    HIT = "HIT"  # served from the cache: nothing behind the edge ran
    MISS = "MISS"  # the edge cache is on, and the service answered (fetched, refetched, 304)
    BYPASS = "BYPASS"  # the edge cache is off for this request, or it is not a GET or HEAD


@dataclass(frozen=True)
class Step:
    method: str
    path: str
    verdict: Verdict
    reaches_service: bool
    override: str | None = None  # X-Lab-Toggles, sent with the admin token
    wait_s: float = 0.0  # pause before this request
    status: int = 200


@dataclass(frozen=True)
class Scenario:
    shared: Toggles  # the lab's shared toggles while the scenario runs
    steps: tuple[Step, ...]


EDGE_ON = Toggles(edge_cache=True)
GET, HEAD, POST = "GET", "HEAD", "POST"
LEAD = "/api/leads/1"
ASSET = "/static/app.js"
H, M, B = Verdict.HIT, Verdict.MISS, Verdict.BYPASS

SCENARIOS: dict[str, Scenario] = {
    "public GET: a miss, hits for s-maxage seconds, then revalidated, then hits again": Scenario(
        EDGE_ON,
        (
            Step(GET, LEAD, M, True),
            Step(GET, LEAD, H, False),
            Step(GET, LEAD, M, True, wait_s=EXPIRY_WAIT_S),  # stale: If-None-Match, 304
            Step(GET, LEAD, H, False),
        ),
    ),
    "static assets are cached like public GETs": Scenario(
        EDGE_ON, (Step(GET, ASSET, M, True), Step(GET, ASSET, H, False))
    ),
    "no-store responses are never stored": Scenario(
        EDGE_ON,
        (
            Step(GET, "/openapi.json", M, True),
            Step(GET, "/openapi.json", M, True),
            Step(GET, "/api/leads/999999", M, True, status=404),
            Step(GET, "/api/leads/999999", M, True, status=404),
        ),
    ),
    "each pinned configuration has entries of its own": Scenario(
        EDGE_ON,
        (
            Step(GET, "/api/stats", M, True),
            Step(GET, "/api/stats", M, True, override="eager_loading=on"),
            Step(GET, "/api/stats", H, False, override="eager_loading=on"),
            Step(GET, "/api/stats", H, False),
        ),
    ),
    "HEAD is cached apart from GET": Scenario(
        EDGE_ON,
        (
            Step(HEAD, ASSET, M, True),
            Step(HEAD, ASSET, H, False),
            Step(GET, ASSET, M, True),
            Step(GET, ASSET, H, False),
        ),
    ),
    "a request pinned to edge_cache=off bypasses the cache": Scenario(
        EDGE_ON,
        (
            Step(GET, LEAD, B, True, override="edge_cache=off"),
            Step(GET, LEAD, B, True, override="edge_cache=off"),
            Step(GET, LEAD, M, True),
        ),
    ),
    "with the edge cache off for everyone, everything reaches the service": Scenario(
        Toggles(),
        (
            Step(GET, LEAD, B, True),
            Step(GET, LEAD, B, True),
            Step(GET, ASSET, B, True),
            Step(HEAD, ASSET, B, True),
        ),
    ),
    "writes pass through": Scenario(
        EDGE_ON,
        (Step(POST, "/api/leads", B, True, status=201), Step(GET, "/api/stats", M, True)),
    ),
}

NEW_LEAD = {
    "company": "Initech",
    "contact_name": "Bill Lumbergh",
    "email": "bill@initech.example",
    "owner_id": 2,
    "tags": ["enterprise"],
    "metadata": {"source": "event"},
}

# nginx's own word for what its cache did ($upstream_cache_status), with the configuration the
# service answered with, and the verdict the lab's edge gives in that case.
NGINX_VERDICTS: tuple[tuple[str, Toggles | None, Verdict], ...] = (
    ("HIT", EDGE_ON, H),
    ("MISS", EDGE_ON, M),
    ("EXPIRED", EDGE_ON, M),  # stale and refetched
    ("REVALIDATED", EDGE_ON, M),  # stale, and the service said 304
    ("MISS", Toggles(), B),  # the service had the edge cache off
    ("MISS", Toggles(edge_cache=False, eager_loading=True), B),
    ("", EDGE_ON, B),  # not a GET or HEAD: the cache was not consulted
    ("", None, B),  # nginx answered itself (health)
)
