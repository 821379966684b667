"""The edge's accounting: its ``Server-Timing`` and ``traceresponse`` headers, and its server span.

A hit cost nothing behind the edge, so its ``Server-Timing`` says so (:data:`HIT_TIMING`) rather
than repeating the stored response's; a miss adds ``cache-edge;desc="miss"`` to the service's;
responses the edge makes itself carry :data:`EDGE_ONLY_TIMING`. The server span is renamed
``edge.request`` and carries the toggles, the cache layer and outcome, the edge's hit/miss counts
and (on a miss or bypass) the service's own accounting as its ``Server-Timing`` reports it, so
that the edge's summary row is a whole request as the user at the front door saw it.
"""

from __future__ import annotations

from opentelemetry import trace

from latency_lab.core.toggles import Toggle, Toggles
from latency_lab.edge.forwarding import EdgeOutcome, Forwarded
from latency_lab.telemetry import RequestTally
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.accounting import parse_server_timing, traceresponse_header

EDGE_ONLY_TIMING = 'db;dur=0;desc="0 statements", ext;dur=0;desc="0 calls"'
HIT_TIMING = f'{EDGE_ONLY_TIMING}, cache-edge;desc="hit"'
MISS_TIMING = 'cache-edge;desc="miss"'


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


def trace_response(outcome: EdgeOutcome, upstream: str | None) -> str | None:
    own = own_trace_response()
    if outcome is EdgeOutcome.HIT or upstream is None or own is None:
        return own or upstream
    # A revalidated entry may still hold the header of the trace that stored it.
    return upstream if upstream.split("-")[1:2] == own.split("-")[1:2] else own


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
