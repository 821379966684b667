"""What happens around every request: its toggles, its accounting, its response headers.

* The effective toggles: the shared state, overridden for this request only by ``X-Lab-Toggles``
  (loopback or admin token, or the configuration the edge decided on and forwarded, see
  :mod:`latency_lab.core.access`). They go on the server span with the world, so every view can
  group requests by configuration.
* The accounting: a :class:`~latency_lab.telemetry.accounting.RequestTally` collects the request's
  spans; when the response is ready it becomes ``Server-Timing`` and server-span attributes (the
  trace store's summary row), and ``traceresponse`` names the trace.
* Caching headers for the edge: with ``edge_cache`` on, public GETs are ``public, s-maxage`` with
  an ETag (so the edge can revalidate); off, every response is ``no-store``.
  ``X-Lab-Config`` names the configuration that produced the response, so an edge that cannot
  read the shared toggles (the nginx edge) still tells "edge cache off" (``X-Cache: BYPASS``)
  from "not cacheable" (``MISS``).
"""

from __future__ import annotations

import functools
import itertools

from flask import Flask, Response, g, request
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from latency_lab.core.access import (
    OverrideRefused,
    is_admin,
    may_pin_configuration,
    requested_toggles,
)
from latency_lab.core.errors import ApiError
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import (
    CONFIG_HEADER,
    EAGER_LOADERS,
    LOADER_HEADER,
    PROFILE_HEADER,
    TOGGLE_HEADER,
    ToggleError,
    Toggles,
    loader_choices,
)
from latency_lab.core.world import World
from latency_lab.service.context import service_context
from latency_lab.service.lead_loader import LoaderStrategy, choose_strategy
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.accounting import traceresponse_header
from latency_lab.telemetry.profiles import ProfileRun

UNCACHED_PREFIXES = ("/admin", "/healthz", "/openapi.json")
_REQUEST_COUNT = itertools.count(1)  # this process's API requests, for LAB_PROFILE_EVERY
NOT_SAMPLED_PREFIXES = (*UNCACHED_PREFIXES, "/static")  # health checks and admin are no sample
STATIC_MAX_AGE_S = 300


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_teardown)


def current_toggles() -> Toggles:
    toggles: Toggles = g.toggles
    return toggles


def _begin() -> None:
    service = service_context()
    snapshot = service.state.snapshot()
    g.toggles = snapshot.toggles
    g.world = snapshot.world
    span = trace.get_current_span()
    context = span.get_span_context()
    g.trace_id = context.trace_id if context.is_valid else None
    if g.trace_id is not None:
        service.telemetry.ledger.open(g.trace_id)
    g.toggles = _requested_toggles(snapshot.toggles, service.settings.admin_token)
    g.loader = choose_strategy(
        eager=g.toggles.eager_loading,
        requested=_loader_override(service.settings.admin_token),
        default=LoaderStrategy(service.settings.loader_strategy),
    )
    _describe_configuration(span)
    profiled = _profile_requested(service.settings)
    # The configuration travels with the trace context (W3C baggage) into the request's jobs,
    # so a job is labelled with the configuration its request ran under (and is profiled too).
    # Both are always set: a caller's own baggage header must not decide them.
    carried = baggage.set_baggage(v.CONFIG_KEY, g.toggles.label())
    carried = baggage.set_baggage(v.PROFILE, "on" if profiled else "off", context=carried)
    g.baggage_token = otel_context.attach(carried)
    if profiled:
        g.profile_run = ProfileRun(f"{request.method} {request.path}").start()


def current_loader() -> LoaderStrategy:
    """How this request loads leads: ``lazy``, or the eager strategy it runs with."""
    loader: LoaderStrategy = g.loader
    return loader


def _requested_toggles(shared: Toggles, admin_token: str | None) -> Toggles:
    override = request.headers.get(TOGGLE_HEADER)
    allowed = override is not None and may_pin_configuration(
        request.remote_addr, request.headers, override, admin_token
    )
    try:
        return requested_toggles(shared, override, may_override=allowed)
    except OverrideRefused as exc:
        raise ApiError(403, str(exc)) from exc
    except ToggleError as exc:
        raise ApiError(400, str(exc), header=TOGGLE_HEADER) from exc


def _profile_requested(settings: Settings) -> bool:
    """``X-Lab-Profile: on`` (loopback or admin token), or every ``LAB_PROFILE_EVERY``-th
    request."""
    raw = request.headers.get(PROFILE_HEADER)
    if raw is not None:
        if raw.strip().lower() not in ("on", "off"):
            raise ApiError(400, f"{PROFILE_HEADER} must be on or off, got {raw!r}",
                           header=PROFILE_HEADER)  # fmt: skip
        if not is_admin(request.remote_addr, request.headers, settings.admin_token):
            raise ApiError(403, f"{PROFILE_HEADER} needs loopback or the admin token")
        return raw.strip().lower() == "on"
    if settings.profile_every <= 0 or request.path.startswith(NOT_SAMPLED_PREFIXES):
        return False
    return next(_REQUEST_COUNT) % settings.profile_every == 0


def _stop_profile(span: trace.Span) -> None:
    """The request's profile goes on its server span; the trace store keeps it with the trace."""
    run: ProfileRun | None = g.pop("profile_run", None)
    if run is not None:
        run.stop_onto(span)


def _loader_override(admin_token: str | None) -> LoaderStrategy | None:
    """``X-Lab-Loader: joined|selectin|rows|json`` picks the eager strategy for one request (the
    bench measures them side by side)."""
    raw = request.headers.get(LOADER_HEADER)
    if raw is None:
        return None
    if not is_admin(request.remote_addr, request.headers, admin_token):
        raise ApiError(403, f"{LOADER_HEADER} needs loopback or the admin token")
    if raw not in EAGER_LOADERS:
        raise ApiError(
            400, f"{LOADER_HEADER} must be {loader_choices()}, got {raw!r}", header=LOADER_HEADER
        )
    return LoaderStrategy(raw)


def _describe_configuration(span: trace.Span) -> None:
    span.set_attributes(_configuration_attributes(g.toggles, g.world, current_loader()))
    via = ", ".join(request.headers.getlist("Via"))
    span.set_attribute(v.REQ_FRONT_DOOR, v.EDGE_PSEUDONYM not in via)  # else the edge is


@functools.lru_cache(maxsize=256)
def _configuration_attributes(
    toggles: Toggles, world: World, loader: LoaderStrategy
) -> dict[str, bool | float | str]:
    """The configuration's span attributes, built once per configuration rather than on every
    request (the toggles and the world change only when someone changes them). Read-only."""
    attributes: dict[str, bool | float | str] = {
        v.TOGGLE_PREFIX + name: enabled for name, enabled in toggles.model_dump().items()
    }
    attributes.update({v.WORLD_PREFIX + name: value for name, value in world.flat().items()})
    attributes[v.CONFIG_KEY] = toggles.label()
    attributes[v.ORM_LOADER] = loader.value
    return attributes


def _finish(response: Response) -> Response:
    service = service_context()
    span = trace.get_current_span()
    _stop_profile(span)
    tally = service.telemetry.ledger.close(g.trace_id) if g.get("trace_id") else None
    if tally is not None:
        span.set_attributes(tally.attributes())
        response.headers["Server-Timing"] = tally.server_timing()
    traceresponse = traceresponse_header(span.get_span_context())
    if traceresponse:
        response.headers["traceresponse"] = traceresponse
    if g.get("toggles") is not None:
        response.headers[CONFIG_HEADER] = g.toggles.label()
    _cache_headers(
        response,
        edge_on=bool(g.get("toggles") and g.toggles.edge_cache),
        max_age_s=service.settings.edge_max_age_s,
    )
    return response


def _cache_headers(response: Response, *, edge_on: bool, max_age_s: int) -> None:
    cacheable = (
        edge_on
        and request.method in ("GET", "HEAD")
        and response.status_code == 200
        and not request.path.startswith(UNCACHED_PREFIXES)
    )
    if not cacheable:
        response.headers["Cache-Control"] = "no-store"
        return
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = f"public, max-age=60, s-maxage={STATIC_MAX_AGE_S}"
    else:
        response.headers["Cache-Control"] = f"public, max-age=0, s-maxage={max_age_s}"
    # Requests pinned to another configuration must not share the edge's entries.
    response.vary.add(TOGGLE_HEADER)
    if not response.is_streamed and not response.direct_passthrough:
        response.add_etag()
        response.make_conditional(request)


def _teardown(_exc: BaseException | None) -> None:
    _stop_profile(trace.get_current_span())  # a request that failed before its response
    token = g.pop("baggage_token", None)
    if token is not None:
        otel_context.detach(token)
    trace_id = g.get("trace_id")
    if trace_id is not None:
        service_context().telemetry.ledger.close(trace_id)
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
