"""The lab's telemetry vocabulary: every span name and attribute key, defined once.

The service, the edge, the workers, the dashboard, the benchmarks and the tests all import these
names, so "a cache lookup on the Redis layer that missed" is spelled the same everywhere.

OpenTelemetry renamed several semantic-convention keys (``OTEL_SEMCONV_STABILITY_OPT_IN``):
readers must accept both spellings, so the pairs are kept here and :func:`first_attribute`
reads whichever is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class CacheLayer(StrEnum):
    """The three cache layers of the article, from the outside in."""

    EDGE = "edge"
    REDIS = "redis"
    APP = "app"


class CacheOutcome(StrEnum):
    HIT = "hit"
    MISS = "miss"


class SingleFlightRole(StrEnum):
    """On an L1 miss, who recomputed: one leader per key; followers waited for its value."""

    LEADER = "leader"  # took the recompute lock and computed
    FOLLOWER = "follower"  # waited and got the leader's value (counted as a hit)
    FALLBACK = "fallback"  # waited in vain (slow or dead leader) and computed itself


class Provider(StrEnum):
    """The simulated third-party providers."""

    EMAIL = "email"
    ANALYTICS = "analytics"
    ENRICHMENT = "enrichment"


class CallMode(StrEnum):
    """Whether a third-party call ran on the request path or in a background job."""

    INLINE = "inline"
    OFFLOADED = "offloaded"


class SpanKindLabel(StrEnum):
    """What a span is, for grouping time by kind (dashboard waterfalls, budgets)."""

    DATABASE = "database"
    CACHE = "cache"
    THIRD_PARTY = "third_party"
    QUEUE = "queue"
    APPLICATION = "application"


# --- span names -------------------------------------------------------------------------------
SPAN_CACHE_LOOKUP = "cache.lookup"  # + attributes below; name suffixed with the layer
SPAN_THIRD_PARTY = "third_party.call"
SPAN_ENQUEUE = "rq.enqueue"
SPAN_JOB = "rq.job"
SPAN_EDGE = "edge.request"


def cache_span_name(layer: CacheLayer) -> str:
    return f"{SPAN_CACHE_LOOKUP} {layer.value}"


def third_party_span_name(provider: Provider) -> str:
    return f"{SPAN_THIRD_PARTY} {provider.value}"


# --- lab attributes ---------------------------------------------------------------------------
LAB = "lab"
CACHE_LAYER = "lab.cache.layer"
CACHE_OUTCOME = "lab.cache.outcome"  # "hit" | "miss"
CACHE_KEY_HASH = "lab.cache.key_hash"  # sha256 prefix, never the raw key
CACHE_ERROR = "lab.cache.error"  # set when a cache layer failed open
CACHE_SINGLE_FLIGHT = "lab.cache.single_flight"  # SingleFlightRole, on L1 misses
CACHE_WAIT_MS = "lab.cache.wait_ms"  # how long a follower waited for the leader's value
THIRD_PARTY_PROVIDER = "lab.third_party.provider"
THIRD_PARTY_MODE = "lab.third_party.mode"  # "inline" | "offloaded"
JOB_ID = "lab.job.id"
JOB_FUNC = "lab.job.func"
JOB_QUEUE = "lab.job.queue"
JOB_ENQUEUED_AT = "lab.job.enqueued_at_ns"
JOB_DISPATCHER = "lab.job.dispatcher"  # "request" | "relay" (the outbox relay)
ORM_RELATIONSHIP = "lab.orm.relationship"  # e.g. "Lead.owner", set on lazy-load statements
ORM_LOADER = "lab.orm.loader"  # "lazy" | "joined" | "selectin" | "rows" | "json"
TOGGLE_PREFIX = "lab.toggle."  # + toggle name, boolean
WORLD_PREFIX = "lab.world."  # + flattened world setting
PROFILE = "lab.profile"  # a profiled span's speedscope document; the store keeps it apart
PROFILED = "lab.profiled"  # True on a span whose profile the store holds
CONFIG_KEY = "lab.config"  # canonical configuration string, e.g. "eager_loading=on,redis_cache=off"
PROCESS_ROLE = "lab.process.role"  # resource attribute: service | edge | worker | thirdparty | ...

# Per-request accounting, set on the server span when the response is built: the same numbers
# travel in ``Server-Timing`` and land in the trace store's summary row.
REQ_DB_STATEMENTS = "lab.request.db.statements"
REQ_DB_TIME_MS = "lab.request.db.time_ms"
REQ_EXT_CALLS = "lab.request.ext.calls"
REQ_EXT_TIME_MS = "lab.request.ext.time_ms"
REQ_JOBS_ENQUEUED = "lab.request.jobs_enqueued"
REQ_CACHE_HITS_PREFIX = "lab.request.cache_hits."  # + layer
REQ_CACHE_MISSES_PREFIX = "lab.request.cache_misses."  # + layer
REQ_N_PLUS_ONE = "lab.request.n_plus_one"  # JSON list of findings
# Whether this server span is where the request entered the lab (the trace store's ``front_door``
# flag): the service's is, unless the request came through the lab's edge, which says so with
# ``Via: 1.1 latency-lab-edge`` (RFC 9110) and records its own server span as the front door.
REQ_FRONT_DOOR = "lab.request.front_door"
EDGE_PSEUDONYM = "latency-lab-edge"  # the received-by name the edge puts in Via

# --- semantic conventions, old and stable spellings --------------------------------------------
DB_STATEMENT_KEYS = ("db.query.text", "db.statement")
DB_SYSTEM_KEYS = ("db.system.name", "db.system")
HTTP_STATUS_KEYS = ("http.response.status_code", "http.status_code")
HTTP_METHOD_KEYS = ("http.request.method", "http.method")
HTTP_ROUTE_KEYS = ("http.route",)
HTTP_TARGET_KEYS = ("url.path", "http.target")
RPC_SYSTEM_KEYS = ("db.system.name", "db.system")


def first_attribute(attributes: Mapping[str, Any] | None, keys: tuple[str, ...]) -> Any:
    """Return the value of the first key present, so old and stable conventions both read."""
    if not attributes:
        return None
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def db_statement(attributes: Mapping[str, Any] | None) -> str | None:
    """The SQL text of a relational-database span, whichever key carries it; None otherwise.

    The Redis instrumentation also fills ``db.statement`` (``GET ?``), but a Redis command is
    cache or queue traffic, not one of the request's statements: it is never counted as one.
    """
    if first_attribute(attributes, DB_SYSTEM_KEYS) == "redis":
        return None
    value = first_attribute(attributes, DB_STATEMENT_KEYS)
    return str(value) if value is not None else None


def http_status(attributes: Mapping[str, Any] | None) -> int | None:
    value = first_attribute(attributes, HTTP_STATUS_KEYS)
    return int(value) if value is not None else None


def kind_of(name: str, attributes: Mapping[str, Any] | None) -> SpanKindLabel:
    """Classify a span for time-by-kind views."""
    attributes = attributes or {}
    if name == SPAN_EDGE:  # the edge's server span: a whole request, not a cache lookup
        return SpanKindLabel.APPLICATION
    if db_statement(attributes) is not None:
        return SpanKindLabel.DATABASE
    if CACHE_LAYER in attributes or name.startswith(SPAN_CACHE_LOOKUP):
        return SpanKindLabel.CACHE
    if first_attribute(attributes, DB_SYSTEM_KEYS) == "redis":
        return SpanKindLabel.CACHE
    if THIRD_PARTY_PROVIDER in attributes:
        return SpanKindLabel.THIRD_PARTY
    if name.startswith(("rq.", SPAN_ENQUEUE)):
        return SpanKindLabel.QUEUE
    return SpanKindLabel.APPLICATION
