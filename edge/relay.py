"""The way back: the service's (or the cache's) response, relayed to the caller.

The body is streamed as it arrives; hop-by-hop headers and the service's ``Date`` and ``Server``
stay behind; ``X-Cache`` says what the edge did, and ``Server-Timing`` and ``traceresponse`` are
the edge's (:mod:`latency_lab.edge.telemetry`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import httpx
from flask import Response as FlaskResponse

from latency_lab.edge.forwarding import (
    HOP_BY_HOP,
    Forwarded,
    UpstreamError,
    connection_tokens,
    describe_failure,
)
from latency_lab.edge.telemetry import server_timing, trace_response

log = logging.getLogger(__name__)

# The edge's own HTTP server writes Date and Server; passing the service's too would duplicate them.
NOT_RELAYED = HOP_BY_HOP | {"date", "server"}


class PassThroughResponse(FlaskResponse):
    """A relayed response: no Content-Type is invented when the service sent none."""

    default_mimetype = None


def relay(forwarded: Forwarded) -> PassThroughResponse:
    """The service's (or the cache's) response, with the edge's headers, body streamed."""
    upstream = forwarded.response
    dropped = NOT_RELAYED | connection_tokens(upstream.headers.get("connection"))
    headers = [
        (k, val)
        for k, val in upstream.headers.multi_items()
        if k.lower() not in dropped | {"server-timing", "traceresponse"}
    ]
    headers.append(("X-Cache", forwarded.outcome.value))
    timing = server_timing(forwarded.outcome, upstream.headers.get_list("server-timing"))
    if timing:
        headers.append(("Server-Timing", timing))
    traceresponse = trace_response(forwarded.outcome, upstream.headers.get("traceresponse"))
    if traceresponse:
        headers.append(("traceresponse", traceresponse))
    return PassThroughResponse(_body(upstream), status=upstream.status_code, headers=headers)


def _body(upstream: httpx.Response) -> Iterable[bytes]:
    if upstream.request.method == "HEAD" or upstream.status_code in (204, 304):
        # No body to stream; reading the empty one now completes the cache entry, which a
        # server skipping the body of a HEAD response would otherwise leave unfinished.
        try:
            upstream.read()
        except httpx.HTTPError as exc:
            detail = describe_failure(exc, str(upstream.request.url))
            raise UpstreamError(502, "service unavailable", detail) from exc
        finally:
            upstream.close()
        return []
    return _stream(upstream)


def _stream(upstream: httpx.Response) -> Iterator[bytes]:
    try:
        yield from upstream.iter_raw()
    except httpx.HTTPError as exc:
        # Headers are already sent: all the edge can do is end the response early.
        log.warning("edge: upstream body interrupted (%s)", exc)
    finally:
        upstream.close()
