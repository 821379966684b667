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

This module is the factory and the routes, and decides each request's configuration; the rest
lives by what it does: :mod:`~latency_lab.edge.cache` (storage, keys, dates),
:mod:`~latency_lab.edge.forwarding` (to the service, through the cache or around it),
:mod:`~latency_lab.edge.relay` (the response back) and :mod:`~latency_lab.edge.telemetry`
(``Server-Timing``, ``traceresponse`` and the server span).
"""

from __future__ import annotations

import httpx
from flask import Blueprint, Flask, Request, current_app, jsonify, request
from flask import Response as FlaskResponse
from flask.typing import ResponseReturnValue
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from latency_lab.core.access import (
    ADMIN_TOKEN_HEADER,
    OverrideRefused,
    is_admin,
    requested_toggles,
)
from latency_lab.core.errors import register_json_errors
from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.toggles import TOGGLE_HEADER, ToggleError, Toggles
from latency_lab.edge.cache import CACHEABLE_METHODS
from latency_lab.edge.forwarding import UPSTREAM_TIMEOUT, Edge, UpstreamError
from latency_lab.edge.relay import relay
from latency_lab.edge.telemetry import (
    EDGE_ONLY_TIMING,
    HIT_TIMING,
    MISS_TIMING,
    annotate_server_span,
    own_trace_response,
)
from latency_lab.telemetry import ProcessTelemetry, configure

__all__ = [  # the entry point, and the constants the edge's contract tests compare against
    "CACHEABLE_METHODS",
    "EDGE_ONLY_TIMING",
    "HIT_TIMING",
    "MISS_TIMING",
    "UPSTREAM_TIMEOUT",
    "create_edge_app",
]

EXTENSION_KEY = "lab_edge"
PROXIED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


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
    telemetry: ProcessTelemetry | None = None,
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
