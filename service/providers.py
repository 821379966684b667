"""The HTTP client for the third-party providers (email, analytics, enrichment).

Every call is a span named after its provider, saying whether it ran on the request path
(``inline``) or in a background job (``offloaded``); the httpx instrumentation adds the HTTP
client span beneath it and carries the trace context to the simulator. Calls are bounded by the
world's timeout and send an ``Idempotency-Key`` so a retried job is delivered once in effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import SpanKind, Status, StatusCode

from latency_lab.telemetry import vocabulary as v


class ThirdPartyError(RuntimeError):
    """A provider failed or timed out; ``provider`` says which."""

    def __init__(self, provider: v.Provider, message: str) -> None:
        super().__init__(f"{provider.value}: {message}")
        self.provider = provider


class ThirdPartyClient:
    def __init__(
        self,
        base_url: str,
        *,
        tracer_provider: trace.TracerProvider,
        timeout_s: Callable[[], float],
    ) -> None:
        self._client = httpx.Client(base_url=base_url)
        HTTPXClientInstrumentor().instrument_client(self._client, tracer_provider=tracer_provider)
        self._tracer = tracer_provider.get_tracer("latency-lab.third_party")
        self._timeout_s = timeout_s

    def call(
        self,
        provider: v.Provider,
        payload: dict[str, Any],
        *,
        mode: v.CallMode,
        idempotency_key: str,
    ) -> dict[str, Any]:
        attributes = {v.THIRD_PARTY_PROVIDER: provider.value, v.THIRD_PARTY_MODE: mode.value}
        with self._tracer.start_as_current_span(
            v.third_party_span_name(provider), kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                response = self._client.post(
                    f"/{provider.value}",
                    json=payload,
                    timeout=self._timeout_s(),
                    headers={"Idempotency-Key": idempotency_key},
                )
            except httpx.HTTPError as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise ThirdPartyError(provider, f"{type(exc).__name__}: {exc}") from exc
            if response.status_code >= 400:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
                raise ThirdPartyError(provider, f"HTTP {response.status_code}")
            body: dict[str, Any] = response.json()
            return body

    def close(self) -> None:
        self._client.close()
