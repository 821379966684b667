"""The third-party simulator: the slow, sometimes failing world of email, analytics and enrichment.

A real HTTP service, run as its own process::

    gunicorn -k gthread --threads 32 -w 1 'latency_lab.simulator.app:create_thirdparty_app()'

Each provider endpoint (``POST /email``, ``POST /analytics``, ``POST /enrichment``) takes a JSON
object, waits the provider's latency from the shared :class:`~latency_lab.core.world.World` (mean
``latency_ms`` plus uniform ``+/- jitter_ms``), then fails with a 503 at ``failure_rate`` or
answers 200. What each provider expects:

* ``/email``: ``{"to": "<address>", "subject"?, "template"?, "lead_id"?}`` -> ``message_id``;
* ``/analytics``: ``{"event": "<name>", "lead_id"?, "properties"?: {...}}`` -> ``event_id``;
* ``/enrichment``: ``{"email"?, "company"?, "lead_id"?}``, at least one of email or company ->
  ``company_size``, ``industry``, ``linkedin``, derived from the company (or the email's domain)
  so that reruns enrich a lead identically.

Every call received is recorded, so tests and the dashboard can count deliveries
(``GET /calls?provider=&since=``, reset with ``DELETE /calls``). A call carrying an
``Idempotency-Key`` that was already delivered is answered 200 with the original result and
counted as a duplicate, not as a second delivery: retries are "delivered exactly once in effect".
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from latency_lab.core.errors import register_json_errors
from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.world import ProviderWorld
from latency_lab.telemetry import ProcessTelemetry, configure
from latency_lab.telemetry.vocabulary import Provider

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
EXTENSION_KEY = "lab_thirdparty"
# Oldest calls are forgotten beyond this many, so a long load run cannot exhaust memory.
MAX_RECORDED_CALLS = 100_000

COMPANY_SIZES = ("1-10", "11-50", "51-200", "201-500", "501-1000", "1001-5000", "5000+")
INDUSTRIES = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Logistics",
    "Education",
    "Energy",
    "Media",
    "Real Estate",
    "Telecommunications",
    "Hospitality",
)


class CallOutcome(StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # an Idempotency-Key already delivered: answered, not re-delivered
    FAILED = "failed"  # the simulated 503
    REJECTED = "rejected"  # bad input, answered 400


class BadInput(ValueError):
    """The request body is not what the provider expects; the message says what is wrong."""


# --- what each provider accepts ---------------------------------------------------------------
class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")

    lead_id: int | None = None


class EmailMessage(_Payload):
    to: str
    subject: str | None = None
    template: str | None = None


class AnalyticsEvent(_Payload):
    event: str
    properties: dict[str, Any] | None = None


class EnrichmentQuery(_Payload):
    email: str | None = None
    company: str | None = None

    @model_validator(mode="after")
    def _something_to_enrich(self) -> EnrichmentQuery:
        if not (self.email or self.company):
            raise ValueError("give the lead's 'email' or 'company' to enrich")
        return self


def _email_result(message: EmailMessage) -> dict[str, Any]:
    return {"message_id": f"msg_{uuid.uuid4().hex[:20]}", "status": "sent", "to": message.to}


def _analytics_result(event: AnalyticsEvent) -> dict[str, Any]:
    return {"event_id": f"evt_{uuid.uuid4().hex[:20]}", "accepted": True, "event": event.event}


def enrich(query: EnrichmentQuery) -> dict[str, Any]:
    """Plausible firmographics, the same for the same company (or email domain) on every run."""
    domain = (query.email or "").rpartition("@")[2].lower()
    company = (query.company or domain.split(".")[0] or "unknown").strip()
    digest = hashlib.sha256(company.lower().encode()).digest()
    slug = re.sub(r"[^a-z0-9]+", "-", company.lower()).strip("-") or "unknown"
    return {
        "company": company,
        "domain": domain or None,
        "company_size": COMPANY_SIZES[digest[0] % len(COMPANY_SIZES)],
        "industry": INDUSTRIES[digest[1] % len(INDUSTRIES)],
        "linkedin": f"https://www.linkedin.com/company/{slug}",
        "confidence": round(0.6 + (digest[2] / 255) * 0.39, 2),
    }


@dataclass(frozen=True)
class ProviderSpec:
    payload: type[_Payload]
    respond: Callable[[Any], dict[str, Any]]


PROVIDERS: dict[Provider, ProviderSpec] = {
    Provider.EMAIL: ProviderSpec(EmailMessage, _email_result),
    Provider.ANALYTICS: ProviderSpec(AnalyticsEvent, _analytics_result),
    Provider.ENRICHMENT: ProviderSpec(EnrichmentQuery, enrich),
}


# --- the record of every call ----------------------------------------------------------------
@dataclass(frozen=True)
class ReceivedCall:
    provider: Provider
    received_at: float  # epoch seconds
    body: Any
    idempotency_key: str | None
    traceparent: str | None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class CallRecord:
    call: ReceivedCall
    outcome: CallOutcome
    status_code: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.call.id,
            "provider": self.call.provider.value,
            "received_at": self.call.received_at,
            "body": self.call.body,
            "idempotency_key": self.call.idempotency_key,
            "traceparent": self.call.traceparent,
            "outcome": self.outcome.value,
            "status_code": self.status_code,
        }


class CallLog:
    """Every call the simulator received, and which idempotency keys were delivered. Thread-safe."""

    def __init__(self, max_calls: int = MAX_RECORDED_CALLS) -> None:
        self._lock = threading.Lock()
        self._records: deque[CallRecord] = deque(maxlen=max_calls)
        self._delivered: dict[tuple[Provider, str], dict[str, Any]] = {}
        self._forgotten = 0

    def settle(
        self, call: ReceivedCall, *, fails: bool, result: dict[str, Any]
    ) -> tuple[CallOutcome, dict[str, Any]]:
        """Decide and record a call's outcome atomically, so one key is never delivered twice."""
        key = (call.provider, call.idempotency_key) if call.idempotency_key else None
        with self._lock:
            if key is not None and key in self._delivered:
                outcome, result = CallOutcome.DUPLICATE, self._delivered[key]
            elif fails:
                outcome = CallOutcome.FAILED
            else:
                outcome = CallOutcome.DELIVERED
                if key is not None:
                    self._delivered[key] = result
            self._append(CallRecord(call, outcome, 503 if outcome is CallOutcome.FAILED else 200))
        return outcome, result

    def reject(self, call: ReceivedCall) -> None:
        with self._lock:
            self._append(CallRecord(call, CallOutcome.REJECTED, 400))

    def _append(self, record: CallRecord) -> None:
        if len(self._records) == self._records.maxlen:
            self._forgotten += 1
        self._records.append(record)

    def select(
        self, provider: Provider | None = None, since: float | None = None
    ) -> list[CallRecord]:
        with self._lock:
            records = list(self._records)
        return [
            r
            for r in records
            if (provider is None or r.call.provider is provider)
            and (since is None or r.call.received_at > since)
        ]

    @property
    def forgotten(self) -> int:
        return self._forgotten

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._delivered.clear()
            self._forgotten = 0


def count_calls(records: list[CallRecord]) -> dict[str, dict[str, int]]:
    """Per provider: received, delivered, duplicates, failed, rejected."""
    counts = {
        p.value: {"received": 0, "delivered": 0, "duplicates": 0, "failed": 0, "rejected": 0}
        for p in Provider
    }
    column = {
        CallOutcome.DELIVERED: "delivered",
        CallOutcome.DUPLICATE: "duplicates",
        CallOutcome.FAILED: "failed",
        CallOutcome.REJECTED: "rejected",
    }
    for record in records:
        provider_counts = counts[record.call.provider.value]
        provider_counts["received"] += 1
        provider_counts[column[record.outcome]] += 1
    return counts


# --- the simulator ----------------------------------------------------------------------------
class ThirdPartySimulator:
    """The providers' behaviour: world settings from shared state, outcomes into the call log."""

    def __init__(self, shared_state: SharedState, *, rng: random.Random | None = None) -> None:
        self.shared_state = shared_state
        self.calls = CallLog()
        self._rng = rng or random.Random()

    def delay_s(self, behaviour: ProviderWorld) -> float:
        jitter = self._rng.uniform(-behaviour.jitter_ms, behaviour.jitter_ms)
        return max(0.0, behaviour.latency_ms + jitter) / 1000

    def fails(self, behaviour: ProviderWorld) -> bool:
        return self._rng.random() < behaviour.failure_rate

    def handle(self, call: ReceivedCall) -> tuple[CallOutcome, dict[str, Any]]:
        """Validate, wait the provider's latency, then deliver, fail, or replay a delivery."""
        spec = PROVIDERS[call.provider]
        try:
            payload = _validate(spec.payload, call.body)
        except BadInput:
            self.calls.reject(call)
            raise
        behaviour = self.shared_state.world.provider(call.provider)
        time.sleep(self.delay_s(behaviour))
        return self.calls.settle(call, fails=self.fails(behaviour), result=spec.respond(payload))


def _validate(model: type[_Payload], body: Any) -> _Payload:
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        raise BadInput("; ".join(problems)) from exc


# --- HTTP -------------------------------------------------------------------------------------
routes = Blueprint("thirdparty", __name__)


def _simulator() -> ThirdPartySimulator:
    simulator: ThirdPartySimulator = current_app.extensions[EXTENSION_KEY]
    return simulator


def _read_json_body() -> Any:
    raw = request.get_data(cache=False)
    if not raw:
        raise BadInput("the body is empty: send a JSON object")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"the body is not valid JSON ({exc})") from exc


def provider_call(provider: Provider) -> ResponseReturnValue:
    """One call to a provider endpoint."""
    received_at = time.time()
    try:
        body = _read_json_body()
    except BadInput:
        _simulator().calls.reject(_received(provider, received_at, None))
        raise
    outcome, result = _simulator().handle(_received(provider, received_at, body))
    if outcome is CallOutcome.FAILED:
        return jsonify(error=f"{provider.value}: simulated failure", provider=provider.value), 503
    response = jsonify(provider=provider.value, **result)
    if outcome is CallOutcome.DUPLICATE:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _received(provider: Provider, received_at: float, body: Any) -> ReceivedCall:
    return ReceivedCall(
        provider=provider,
        received_at=received_at,
        body=body,
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER) or None,
        traceparent=request.headers.get("traceparent"),
    )


def _provider_view(provider: Provider) -> Callable[[], ResponseReturnValue]:
    def view() -> ResponseReturnValue:
        return provider_call(provider)

    view.__name__ = f"{provider.value}_call"
    return view


for _provider in Provider:
    routes.add_url_rule(
        f"/{_provider.value}", view_func=_provider_view(_provider), methods=["POST"]
    )


@routes.get("/calls")
def list_calls() -> ResponseReturnValue:
    provider = _provider_arg(request.args.get("provider"))
    since = _since_arg(request.args.get("since"))
    simulator = _simulator()
    records = simulator.calls.select(provider, since)
    return jsonify(
        calls=[r.to_json() for r in records],
        counts=count_calls(records),
        forgotten=simulator.calls.forgotten,
    )


@routes.delete("/calls")
def reset_calls() -> ResponseReturnValue:
    _simulator().calls.reset()
    return jsonify(status="reset")


@routes.get("/healthz")
def healthz() -> ResponseReturnValue:
    shared_state = _simulator().shared_state
    shared_state.snapshot()  # the first read starts this process's shared-state poller
    healthy = shared_state.healthy
    return jsonify(status="ok" if healthy else "degraded", redis=healthy), 200 if healthy else 503


def _provider_arg(raw: str | None) -> Provider | None:
    if not raw:
        return None
    try:
        return Provider(raw)
    except ValueError:
        known = ", ".join(p.value for p in Provider)
        raise BadInput(f"unknown provider {raw!r}; known: {known}") from None


def _since_arg(raw: str | None) -> float | None:
    """``since`` as epoch seconds or an ISO 8601 timestamp (naive means UTC)."""
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadInput(f"since={raw!r}: give epoch seconds or an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _bad_input(exc: BadInput) -> ResponseReturnValue:
    return jsonify(error=str(exc)), 400


# --- the factory ------------------------------------------------------------------------------
def create_thirdparty_app(
    settings: Settings | None = None,
    *,
    shared_state: SharedState | None = None,
    telemetry: ProcessTelemetry | None = None,
) -> Flask:
    """Build the simulator; with no arguments it reads the environment (gunicorn's entry point)."""
    settings = settings or Settings()
    shared_state = shared_state or SharedState.connect(settings.redis_url)
    telemetry = telemetry or configure(
        "latency-lab-thirdparty", role="thirdparty", **settings.telemetry_options()
    )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION_KEY] = ThirdPartySimulator(shared_state)
    app.register_blueprint(routes)
    app.register_error_handler(BadInput, _bad_input)
    register_json_errors(app, "the third-party simulator")
    FlaskInstrumentor().instrument_app(app, tracer_provider=telemetry.tracer_provider)
    return app
