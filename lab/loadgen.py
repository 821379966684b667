"""The load generator: a realistic mix of requests against the lab, from threads, with progress.

Used three ways: ``latency-lab load`` on the command line, the dashboard's "Drive load" panel
(running outside Streamlit's script thread), and ``latency-lab bench``. Each request's cost is
read from its ``Server-Timing`` header (statements, third-party calls, cache outcomes), so the
generator reports the same numbers the trace store holds.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from latency_lab.core.access import ADMIN_TOKEN_HEADER
from latency_lab.core.toggles import LOADER_HEADER, TOGGLE_HEADER
from latency_lab.telemetry.accounting import ServerTiming, parse_server_timing
from latency_lab.telemetry.percentiles import nearest_rank


class Endpoint(StrEnum):
    LIST = "list"
    DETAIL = "detail"
    CREATE = "create"
    STATS = "stats"
    STATIC = "static"


DEFAULT_MIX: dict[Endpoint, float] = {
    Endpoint.LIST: 50,
    Endpoint.DETAIL: 30,
    Endpoint.STATS: 10,
    Endpoint.STATIC: 7,
    Endpoint.CREATE: 3,
}


class LoadError(ValueError):
    """A load specification that cannot run; the message says which part."""


def parse_mix(text: str) -> dict[Endpoint, float]:
    """``list=70,detail=20,stats=10`` -> weights; unknown endpoints and bad weights are errors."""
    mix: dict[Endpoint, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        if not sep:
            raise LoadError(f"mix entry {part!r}: expected endpoint=weight")
        try:
            endpoint = Endpoint(name.strip())
        except ValueError:
            known = ", ".join(e.value for e in Endpoint)
            raise LoadError(f"unknown endpoint {name!r}; known: {known}") from None
        try:
            weight = float(raw)
        except ValueError:
            raise LoadError(f"weight for {name!r} must be a number, got {raw!r}") from None
        if weight < 0:
            raise LoadError(f"weight for {name!r} must not be negative")
        mix[endpoint] = weight
    if not mix or sum(mix.values()) <= 0:
        raise LoadError("the mix needs at least one endpoint with a positive weight")
    return mix


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    requests: int = 200
    concurrency: int = 4
    rate_per_s: float | None = None  # None: as fast as the workers go
    mix: dict[Endpoint, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    list_limit: int = 100
    list_offsets: tuple[int, ...] = (0, 0, 0, 100, 200)  # the first page is the hot one
    max_lead_id: int = 5000
    max_owner_id: int = 50
    toggles: str | None = None  # X-Lab-Toggles for every request (pinned configuration)
    loader: str | None = None  # X-Lab-Loader: joined | selectin | rows | json (eager on)
    admin_token: str | None = None
    timeout_s: float = 30.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise LoadError("requests must be at least 1")
        if not 1 <= self.concurrency <= 256:
            raise LoadError("concurrency must be between 1 and 256")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise LoadError("rate must be positive")


@dataclass(frozen=True)
class Sample:
    endpoint: Endpoint
    status: int
    latency_ms: float
    timing: ServerTiming
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status < 500


@dataclass
class LoadReport:
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self) -> dict[str, float | int | None]:
        return summarize(self.samples, self.elapsed_s)


def summarize(samples: list[Sample], elapsed_s: float) -> dict[str, float | int | None]:
    latencies = [s.latency_ms for s in samples]
    statements = [s.timing.statements for s in samples if s.timing.statements is not None]
    ext = [s.timing.ext_ms for s in samples if s.timing.ext_ms is not None]
    hits: Counter[str] = Counter()
    lookups: Counter[str] = Counter()
    for sample in samples:
        for layer, outcome in sample.timing.cache.items():
            lookups[layer] += 1
            hits[layer] += outcome == "hit"
    out: dict[str, float | int | None] = {
        "requests": len(samples),
        "errors": sum(not s.ok for s in samples),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "requests_per_s": round(len(samples) / elapsed_s, 2) if elapsed_s > 0 else None,
        "statements_per_request": round(statistics.fmean(statements), 2) if statements else None,
        "ext_ms_per_request": round(statistics.fmean(ext), 2) if ext else None,
    }
    for layer in ("edge", "redis", "app"):
        out[f"hit_rate_{layer}"] = (
            round(hits[layer] / lookups[layer], 3) if lookups[layer] else None
        )
    return out


def percentile(values: list[float], pct: float) -> float | None:
    """The lab's percentile (:mod:`latency_lab.telemetry.percentiles`, nearest rank), to 0.01 ms."""
    value = nearest_rank(values, pct)
    return None if value is None else round(value, 2)


class LoadGenerator:
    """Runs one :class:`LoadSpec` on worker threads; ``start()`` returns at once."""

    def __init__(
        self,
        spec: LoadSpec,
        *,
        on_sample: Callable[[Sample], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.spec = spec
        self.report = LoadReport()
        self._on_sample = on_sample
        self._transport = transport
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._issued = 0
        self._active = 0
        self._threads: list[threading.Thread] = []
        self._rng = random.Random(spec.seed)
        self._endpoints = list(spec.mix)
        self._weights = [spec.mix[e] for e in self._endpoints]

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        self.report = LoadReport()
        self._active = self.spec.concurrency
        for index in range(self.spec.concurrency):
            thread = threading.Thread(target=self._work, name=f"load-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> LoadReport:
        for thread in self._threads:
            thread.join(timeout_s)
        return self.report

    def run(self) -> LoadReport:
        return self.start().wait()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def done(self) -> int:
        return len(self.report.samples)

    # --- work --------------------------------------------------------------------------------
    def _tickets(self) -> Iterator[tuple[int, Endpoint]]:
        while not self._stop.is_set():
            with self._lock:
                if self._issued >= self.spec.requests:
                    return
                ticket = self._issued
                self._issued += 1
                endpoint = self._rng.choices(self._endpoints, self._weights)[0]
            yield ticket, endpoint

    def _work(self) -> None:
        headers = {}
        if self.spec.toggles:
            headers[TOGGLE_HEADER] = self.spec.toggles
        if self.spec.loader:
            headers[LOADER_HEADER] = self.spec.loader
        if self.spec.admin_token:
            headers[ADMIN_TOKEN_HEADER] = self.spec.admin_token
        with httpx.Client(
            base_url=self.spec.base_url,
            headers=headers,
            timeout=self.spec.timeout_s,
            transport=self._transport,
        ) as client:
            for ticket, endpoint in self._tickets():
                self._pace(ticket)
                sample = self._one(client, endpoint, ticket)
                with self._lock:
                    self.report.samples.append(sample)
                if self._on_sample is not None:
                    self._on_sample(sample)
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.report.finished = time.monotonic()

    def _pace(self, ticket: int) -> None:
        if self.spec.rate_per_s is None:
            return
        due = self.report.started + ticket / self.spec.rate_per_s
        delay = due - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def _one(self, client: httpx.Client, endpoint: Endpoint, ticket: int) -> Sample:
        method, path, body = self._request_for(endpoint, ticket)
        started = time.perf_counter()
        try:
            response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return Sample(endpoint, 0, elapsed, ServerTiming(), error=type(exc).__name__)
        elapsed = (time.perf_counter() - started) * 1000
        timing = parse_server_timing(response.headers.get("Server-Timing"))
        return Sample(endpoint, response.status_code, elapsed, timing)

    def _request_for(self, endpoint: Endpoint, ticket: int) -> tuple[str, str, object]:
        rng = random.Random(self.spec.seed * 1_000_003 + ticket)
        if endpoint is Endpoint.LIST:
            offset = rng.choice(self.spec.list_offsets)
            return "GET", f"/api/leads?limit={self.spec.list_limit}&offset={offset}", None
        if endpoint is Endpoint.DETAIL:
            lead_id = min(self.spec.max_lead_id, int(rng.paretovariate(1.2)))  # a few hot leads
            return "GET", f"/api/leads/{lead_id}", None
        if endpoint is Endpoint.STATS:
            return "GET", "/api/stats", None
        if endpoint is Endpoint.STATIC:
            return "GET", rng.choice(("/static/app.js", "/static/style.css", "/")), None
        return (
            "POST",
            "/api/leads",
            {
                "company": f"Loadtest Co {ticket}",
                "contact_name": f"Load Tester {ticket}",
                "email": f"load.{ticket}.{self.spec.seed}@loadtest.example",
                "owner_id": rng.randint(1, self.spec.max_owner_id),
                "score": rng.randint(0, 100),
            },
        )
