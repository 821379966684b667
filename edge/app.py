"""The edge: the lab's CDN, an HTTP cache in front of the service.

Run as its own process, forwarding to ``settings.resolved_service_url``::

    gunicorn -k gthread --threads 16 -w 1 'latency_lab.edge.app:create_edge_app()'

Every request is forwarded to the service (method, path, query, body and headers, minus
hop-by-hop ones) and the response streamed back. The ``edge_cache`` toggle decides whether the
cache is consulted; it is the shared toggle, or the request's ``X-Lab-Toggles`` override when the
caller may override (:func:`latency_lab.core.access.is_admin`):

* off: ``X-Cache: BYPASS``; nothing is served from or stored in the cache.
* on: GET and HEAD go through an RFC 9111 *shared* cache: ``s-maxage`` is honoured, ``private``
  and ``no-store`` responses are never stored, a stale entry with an ``ETag`` is revalidated with
  ``If-None-Match`` (a 304 refreshes it). ``X-Cache: HIT`` or ``MISS``, and ``Server-Timing``
  gains ``cache-edge;desc="hit"|"miss"``. Other methods pass through (``X-Cache: BYPASS``), and a
  successful one invalidates the stored entries of its URL, as RFC 9111 section 4.4 asks.

The caching semantics are hishel's (2.x, ``CacheTransport`` in RFC mode with
``CacheOptions(shared=True)``), not ours. The entries live in hishel's SQLite storage on an
in-memory database: the edge is one process (gthread workers share it), entries are rebuilt in
a second after a restart, and nothing stale survives a restart to confuse a run.
``POST /edge/purge`` (admin) empties it.

The cache key is the URL plus the request's effective toggle configuration: a response belongs
to the configuration that produced it, so requests pinned to different configurations with
``X-Lab-Toggles`` never share entries, and flipping a shared toggle starts from a cold edge.
The configuration the edge decided on is forwarded whole in ``X-Lab-Toggles`` (signed when the
lab has an admin token, :mod:`latency_lab.core.access`): the service, and the jobs the request
enqueues, apply that same configuration, even in the second after a flip when the processes'
snapshots of the shared toggles differ. A caller's own override reaches the service only if the
caller may override (an admin's); anyone else's is ignored.

Telemetry: the server span is renamed ``edge.request`` and carries the toggles, the cache layer
and outcome and the edge's hit/miss counts; a child span ``cache.lookup edge`` covers the lookup
(and the fetch, on a miss). Forwarding goes through an OpenTelemetry-instrumented transport
*below* the cache, so ``traceparent`` reaches the service and a client span exists only when a
request really leaves the edge.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from enum import StrEnum
from urllib.parse import quote

import httpx
from flask import Blueprint, Flask, Request, current_app, jsonify, request
from flask import Response as FlaskResponse
from flask.typing import ResponseReturnValue
from hishel import CacheOptions, SqliteStorage
from hishel.httpx import CacheTransport
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport

from latency_lab.core.access import (
    ADMIN_TOKEN_HEADER,
    CONFIG_SIGNATURE_HEADER,
    OverrideRefused,
    configuration_signature,
    is_admin,
    requested_toggles,
)
from latency_lab.core.errors import register_json_errors
from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.toggles import TOGGLE_HEADER, Toggle, ToggleError, Toggles
from latency_lab.telemetry import LabTelemetry, RequestTally, configure
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.accounting import parse_server_timing, traceresponse_header

log = logging.getLogger(__name__)

EXTENSION_KEY = "lab_edge"
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
PROXIED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# RFC 9110 section 7.6.1, plus the pre-standard ones still seen in the wild.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Rebuilt for the outgoing request: Host and length by httpx, trace context by the instrumentation.
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "traceparent", "tracestate"}
# Replaced by the edge's own decision (see _forwarded_headers).
OVERRIDE_HEADERS = frozenset({TOGGLE_HEADER.lower(), CONFIG_SIGNATURE_HEADER.lower()})
# The edge's own HTTP server writes Date and Server; passing the service's too would duplicate them.
NOT_RELAYED = HOP_BY_HOP | {"date", "server"}
UPSTREAM_TIMEOUT = httpx.Timeout(30.0, connect=2.0)
CACHE_MAX_BYTES = 64 * 1024 * 1024
# Storage lifetime of an entry; freshness is the response's own Cache-Control. Stale entries are
# kept this long so that their ETag can still be revalidated.
CACHE_ENTRY_TTL_S = 600.0
EDGE_ONLY_TIMING = 'db;dur=0;desc="0 statements", ext;dur=0;desc="0 calls"'
HIT_TIMING = f'{EDGE_ONLY_TIMING}, cache-edge;desc="hit"'
MISS_TIMING = 'cache-edge;desc="miss"'


class EdgeOutcome(StrEnum):
    """What the edge did with a request; the value is the ``X-Cache`` header."""

    HIT = "HIT"
    MISS = "MISS"
    BYPASS = "BYPASS"


def effective_toggles(incoming: Request, settings: Settings, shared: SharedState) -> Toggles:
    """The request's configuration (:func:`~latency_lab.core.access.requested_toggles`).

    The edge is the public front door: an override its caller may not send is dropped, not
    refused (raises ``ToggleError`` for an admin's malformed one).
    """
    override = incoming.headers.get(TOGGLE_HEADER)
    allowed = override is not None and caller_is_admin(incoming, settings)
    try:
        return requested_toggles(shared.toggles, override, may_override=allowed)
    except OverrideRefused:
        return shared.toggles


def caller_is_admin(incoming: Request, settings: Settings) -> bool:
    # is_admin reads a plain mapping; werkzeug's headers are looked up case-insensitively here.
    credentials = {
        name: value
        for name in (ADMIN_TOKEN_HEADER, "Authorization")
        if (value := incoming.headers.get(name)) is not None
    }
    return is_admin(incoming.remote_addr, credentials, settings.admin_token)


# --- the cache --------------------------------------------------------------------------------
class EdgeCache:
    """The edge's hishel storage: SQLite in memory. Purging swaps in an empty one."""

    def __init__(self) -> None:
        self._storage = self._empty_storage()

    @staticmethod
    def _empty_storage() -> SqliteStorage:
        # Readers still streaming from a purged storage keep it alive until they finish.
        connection = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        return SqliteStorage(
            connection=connection, default_ttl=CACHE_ENTRY_TTL_S, max_size=CACHE_MAX_BYTES
        )

    @property
    def storage(self) -> SqliteStorage:
        return self._storage

    def purge(self) -> None:
        self._storage = self._empty_storage()  # one assignment: atomic for concurrent readers


def cache_key(url: str, toggles: Toggles) -> str:
    """The entry key: the URL and the configuration that produced the response."""
    return hashlib.sha256(f"RFC {url}\n{TOGGLE_HEADER}: {toggles.label()}".encode()).hexdigest()


class DateStampingTransport(httpx.BaseTransport):
    """Adds ``Date`` to responses that lack one (RFC 9110 section 6.6.1: a recipient with a
    clock must, before caching or forwarding). Freshness is computed from it: without it, an
    entry would never age."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if "date" not in response.headers:
            response.headers["Date"] = formatdate(usegmt=True)
        return response

    def close(self) -> None:
        self._inner.close()


# --- forwarding -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Forwarded:
    response: httpx.Response
    outcome: EdgeOutcome


class UpstreamError(Exception):
    """The service could not be reached or did not answer in time."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class Edge:
    """Forwards requests to the service, through the cache when ``edge_cache`` is on."""

    def __init__(
        self,
        settings: Settings,
        shared_state: SharedState,
        telemetry: LabTelemetry,
        origin: httpx.BaseTransport,
        timeout: httpx.Timeout,
    ) -> None:
        self.settings = settings
        self.shared_state = shared_state
        self.upstream_url = settings.resolved_service_url.rstrip("/")
        self.cache = EdgeCache()
        self._tracer = telemetry.tracer
        traced_origin = DateStampingTransport(
            SyncOpenTelemetryTransport(origin, tracer_provider=telemetry.tracer_provider)
        )
        cache = CacheTransport(traced_origin, self.cache.storage, CacheOptions(shared=True))
        self._direct = _transparent_client(traced_origin, timeout)
        self._cached = _transparent_client(cache, timeout)

    def forward(self, incoming: Request, decided: Toggles) -> Forwarded:
        """Send ``incoming`` on; raises UpstreamError when the service fails to answer."""
        url = self.upstream_url + _raw_target(incoming)
        if not decided.edge_cache:
            return Forwarded(self._send(self._direct, incoming, url, decided), EdgeOutcome.BYPASS)
        key = cache_key(url, decided)
        caching: dict[str, object] = {"caching": {"key": key, "storage": self.cache.storage}}
        if incoming.method not in CACHEABLE_METHODS:
            # Not served from the cache, but passes through it to invalidate its URL's entries.
            response = self._send(self._cached, incoming, url, decided, caching)
            return Forwarded(response, EdgeOutcome.BYPASS)
        with self._tracer.start_as_current_span(v.cache_span_name(v.CacheLayer.EDGE)) as span:
            span.set_attribute(v.CACHE_LAYER, v.CacheLayer.EDGE.value)
            span.set_attribute(v.CACHE_KEY_HASH, key[:16])
            span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.MISS.value)
            response = self._send(self._cached, incoming, url, decided, caching)
            status = response.extensions.get("caching", {})
            # A revalidated entry is served from the cache, but only after asking the service.
            hit = bool(status.get("from_cache")) and not status.get("revalidated")
            if hit:
                span.set_attribute(v.CACHE_OUTCOME, v.CacheOutcome.HIT.value)
        return Forwarded(response, EdgeOutcome.HIT if hit else EdgeOutcome.MISS)

    def _send(
        self,
        client: httpx.Client,
        incoming: Request,
        url: str,
        decided: Toggles,
        extensions: dict[str, object] | None = None,
    ) -> httpx.Response:
        outgoing = client.build_request(
            incoming.method,
            url,
            headers=_forwarded_headers(incoming, decided, self.settings.admin_token),
            content=incoming.get_data() or None,
            extensions=extensions,
        )
        try:
            return client.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            detail = _describe(exc, self.upstream_url)
            raise UpstreamError(504, "service timed out", detail) from exc
        except httpx.HTTPError as exc:
            detail = _describe(exc, self.upstream_url)
            raise UpstreamError(502, "service unavailable", detail) from exc


def _transparent_client(transport: httpx.BaseTransport, timeout: httpx.Timeout) -> httpx.Client:
    client = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
    client.headers.clear()  # httpx's defaults (User-Agent, Accept-Encoding...) are not ours to add
    return client


def _raw_target(incoming: Request) -> str:
    """Path and query as the client sent them, percent-encoding intact."""
    raw = incoming.environ.get("RAW_URI") or incoming.environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        return raw
    query = incoming.query_string.decode("latin-1")
    return quote(incoming.path) + (f"?{query}" if query else "")


def _forwarded_headers(
    incoming: Request, decided: Toggles, admin_token: str | None
) -> list[tuple[str, str]]:
    """The caller's headers, with the configuration the edge decided on in ``X-Lab-Toggles``.

    The service then applies the same configuration as the edge (also in the second after a
    flip, when their snapshots of the shared toggles may differ); a caller's own override reaches
    it only as part of that decision, which only an admin's can change.
    """
    dropped = NOT_FORWARDED | OVERRIDE_HEADERS | {"x-forwarded-for"}
    dropped |= _connection_tokens(incoming.headers.get("Connection"))
    headers = [(k, val) for k, val in incoming.headers.items() if k.lower() not in dropped]
    configuration = decided.label()
    headers.append((TOGGLE_HEADER, configuration))
    if admin_token:
        signature = configuration_signature(configuration, admin_token)
        headers.append((CONFIG_SIGNATURE_HEADER, signature))
    forwarded_for = incoming.headers.get("X-Forwarded-For")
    client = incoming.remote_addr or "unknown"
    headers.append(("X-Forwarded-For", f"{forwarded_for}, {client}" if forwarded_for else client))
    headers.append(("X-Forwarded-Proto", incoming.scheme))
    headers.append(("X-Forwarded-Host", incoming.host))
    headers.append(("Via", f"1.1 {v.EDGE_PSEUDONYM}"))  # RFC 9110 Via: the service sees the edge
    return headers


def _connection_tokens(value: str | None) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in (value or "").split(",") if t.strip())


def _describe(exc: httpx.HTTPError, upstream: str) -> str:
    what = f"{type(exc).__name__} talking to {upstream}"
    return f"{what}: {exc}" if str(exc) else what


# --- the response -----------------------------------------------------------------------------
class PassThroughResponse(FlaskResponse):
    """A relayed response: no Content-Type is invented when the service sent none."""

    default_mimetype = None


def relay(forwarded: Forwarded) -> PassThroughResponse:
    """The service's (or the cache's) response, with the edge's headers, body streamed."""
    upstream = forwarded.response
    dropped = NOT_RELAYED | _connection_tokens(upstream.headers.get("connection"))
    headers = [
        (k, val)
        for k, val in upstream.headers.multi_items()
        if k.lower() not in dropped | {"server-timing", "traceresponse"}
    ]
    headers.append(("X-Cache", forwarded.outcome.value))
    timing = server_timing(forwarded.outcome, upstream.headers.get_list("server-timing"))
    if timing:
        headers.append(("Server-Timing", timing))
    trace_response = _trace_response(forwarded.outcome, upstream.headers.get("traceresponse"))
    if trace_response:
        headers.append(("traceresponse", trace_response))
    return PassThroughResponse(_body(upstream), status=upstream.status_code, headers=headers)


def _body(upstream: httpx.Response) -> Iterable[bytes]:
    if upstream.request.method == "HEAD" or upstream.status_code in (204, 304):
        # No body to stream; reading the empty one now completes the cache entry, which a
        # server skipping the body of a HEAD response would otherwise leave unfinished.
        try:
            upstream.read()
        except httpx.HTTPError as exc:
            detail = _describe(exc, str(upstream.request.url))
            raise UpstreamError(502, "service unavailable", detail) from exc
        finally:
            upstream.close()
        return []
    return _stream(upstream)


def server_timing(outcome: EdgeOutcome, upstream: list[str]) -> str:
    """A hit cost nothing behind the edge: the stored timings describe the original request."""
    if outcome is EdgeOutcome.HIT:
        return HIT_TIMING
    if outcome is EdgeOutcome.MISS:
        return ", ".join([*upstream, MISS_TIMING])
    return ", ".join(upstream)


def own_trace_response() -> str | None:
    """``traceresponse`` for the edge's server span."""
    return traceresponse_header(trace.get_current_span().get_span_context())


def _trace_response(outcome: EdgeOutcome, upstream: str | None) -> str | None:
    own = own_trace_response()
    if outcome is EdgeOutcome.HIT or upstream is None or own is None:
        return own or upstream
    # A revalidated entry may still hold the header of the trace that stored it.
    return upstream if upstream.split("-")[1:2] == own.split("-")[1:2] else own


def _stream(upstream: httpx.Response) -> Iterator[bytes]:
    try:
        yield from upstream.iter_raw()
    except httpx.HTTPError as exc:
        # Headers are already sent: all the edge can do is end the response early.
        log.warning("edge: upstream body interrupted (%s)", exc)
    finally:
        upstream.close()


def annotate_server_span(decided: Toggles, forwarded: Forwarded) -> None:
    """The edge's part of the request, on its server span (what the trace store summarises)."""
    span = trace.get_current_span()
    span.update_name(v.SPAN_EDGE)
    span.set_attribute(v.CONFIG_KEY, decided.label())
    for toggle in Toggle:
        span.set_attribute(v.TOGGLE_PREFIX + toggle.value, decided.enabled(toggle))
    span.set_attribute(v.CACHE_LAYER, v.CacheLayer.EDGE.value)
    if forwarded.outcome is EdgeOutcome.HIT:
        # The whole request was answered here: nothing behind the edge ran.
        span.set_attributes(RequestTally().attributes())
    else:
        # The service's own accounting, as its Server-Timing reports it: the edge's summary row
        # is then a whole request as the user at the front door saw it.
        upstream = ", ".join(forwarded.response.headers.get_list("server-timing"))
        span.set_attributes(parse_server_timing(upstream).attributes())
    if forwarded.outcome is not EdgeOutcome.BYPASS:
        hit = forwarded.outcome is EdgeOutcome.HIT
        outcome = v.CacheOutcome.HIT if hit else v.CacheOutcome.MISS
        span.set_attribute(v.CACHE_OUTCOME, outcome.value)
        span.set_attribute(v.REQ_CACHE_HITS_PREFIX + v.CacheLayer.EDGE.value, int(hit))
        span.set_attribute(v.REQ_CACHE_MISSES_PREFIX + v.CacheLayer.EDGE.value, int(not hit))


# --- HTTP -------------------------------------------------------------------------------------
routes = Blueprint("edge", __name__)


def _edge() -> Edge:
    edge: Edge = current_app.extensions[EXTENSION_KEY]
    return edge


@routes.get("/edge/healthz")
def healthz() -> ResponseReturnValue:
    edge = _edge()
    edge.shared_state.snapshot()  # the first read starts this process's shared-state poller
    return jsonify(status="ok", upstream=edge.upstream_url, shared_state=edge.shared_state.healthy)


@routes.post("/edge/purge")
def purge() -> ResponseReturnValue:
    edge = _edge()
    if not caller_is_admin(request, edge.settings):
        return jsonify(
            error="purging the edge is for admins: call from loopback or send the "
            "admin token (Authorization: Bearer ...)"
        ), 403
    edge.cache.purge()
    return jsonify(status="purged")


@routes.route("/", defaults={"path": ""}, methods=PROXIED_METHODS)
@routes.route("/<path:path>", methods=PROXIED_METHODS)
def proxy(path: str) -> ResponseReturnValue:
    edge = _edge()
    decided = effective_toggles(request, edge.settings, edge.shared_state)
    forwarded = edge.forward(request, decided)
    annotate_server_span(decided, forwarded)
    return relay(forwarded)


def _stamp_edge_made(response: FlaskResponse) -> FlaskResponse:
    """Responses the edge makes itself (errors, health) carry timing and trace headers too."""
    if "X-Cache" not in response.headers:
        response.headers.setdefault("Server-Timing", EDGE_ONLY_TIMING)
        own = own_trace_response()
        if own:
            response.headers.setdefault("traceresponse", own)
    return response


def _bad_toggles(exc: ToggleError) -> ResponseReturnValue:
    return jsonify(error=str(exc), header=TOGGLE_HEADER), 400


def _upstream_failed(exc: UpstreamError) -> ResponseReturnValue:
    return jsonify(error=exc.error, detail=exc.detail, upstream=_edge().upstream_url), exc.status


# --- the factory ------------------------------------------------------------------------------
def create_edge_app(
    settings: Settings | None = None,
    *,
    shared_state: SharedState | None = None,
    telemetry: LabTelemetry | None = None,
    upstream_transport: httpx.BaseTransport | None = None,
    upstream_timeout: httpx.Timeout = UPSTREAM_TIMEOUT,
) -> Flask:
    """Build the edge; with no arguments it reads the environment (gunicorn's entry point).

    ``upstream_transport`` replaces the network transport to the service (tests pass an
    ``httpx.WSGITransport`` around a fake upstream).
    """
    settings = settings or Settings()
    shared_state = shared_state or SharedState.connect(settings.redis_url)
    telemetry = telemetry or configure(
        "latency-lab-edge", role="edge", **settings.telemetry_options()
    )
    origin = upstream_transport or httpx.HTTPTransport(
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32)
    )
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    edge = Edge(settings, shared_state, telemetry, origin, upstream_timeout)
    app.extensions[EXTENSION_KEY] = edge
    app.register_blueprint(routes)
    app.after_request(_stamp_edge_made)
    app.register_error_handler(ToggleError, _bad_toggles)
    app.register_error_handler(UpstreamError, _upstream_failed)
    register_json_errors(app, "the edge")
    FlaskInstrumentor().instrument_app(app, tracer_provider=telemetry.tracer_provider)
    return app
