"""Forwarding to the service: one request on, through the cache or around it.

:meth:`Edge.forward` sends a request to the service with the caller's headers (minus hop-by-hop
ones) and the configuration the edge decided on in ``X-Lab-Toggles`` (signed when the lab has an
admin token, :mod:`latency_lab.core.access`), and says what the edge did with it
(:class:`EdgeOutcome`). With ``edge_cache`` off the request goes straight on; with it on, GET and
HEAD go through the cache (a span ``cache.lookup edge`` covers the lookup, and the fetch on a
miss), and other methods pass through it so that a successful one invalidates its URL's entries.
The transport to the service is OpenTelemetry-instrumented *below* the cache, so ``traceparent``
reaches the service and a client span exists only when a request really leaves the edge. A
service that cannot be reached or does not answer in time raises :class:`UpstreamError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

import httpx
from flask import Request
from hishel import CacheOptions
from hishel.httpx import CacheTransport
from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport

from latency_lab.core.access import CONFIG_SIGNATURE_HEADER, configuration_signature
from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.toggles import TOGGLE_HEADER, Toggles
from latency_lab.edge.cache import CACHEABLE_METHODS, DateStampingTransport, EdgeCache, cache_key
from latency_lab.telemetry import ProcessTelemetry
from latency_lab.telemetry import vocabulary as v

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
UPSTREAM_TIMEOUT = httpx.Timeout(30.0, connect=2.0)


class EdgeOutcome(StrEnum):
    """What the edge did with a request; the value is the ``X-Cache`` header."""

    HIT = "HIT"
    MISS = "MISS"
    BYPASS = "BYPASS"


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
        telemetry: ProcessTelemetry,
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
            detail = describe_failure(exc, self.upstream_url)
            raise UpstreamError(504, "service timed out", detail) from exc
        except httpx.HTTPError as exc:
            detail = describe_failure(exc, self.upstream_url)
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
    dropped |= connection_tokens(incoming.headers.get("Connection"))
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


def connection_tokens(value: str | None) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in (value or "").split(",") if t.strip())


def describe_failure(exc: httpx.HTTPError, upstream: str) -> str:
    what = f"{type(exc).__name__} talking to {upstream}"
    return f"{what}: {exc}" if str(exc) else what
