"""The edge: what reaches the service with the cache on and off, RFC 9111 shared-cache rules,
the override header, its headers and spans, and upstream failures.

The service is a tiny fake of our own, served by a real HTTP server thread, that counts the
requests reaching it and sends the headers the real service sends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from flask import Flask, Response, request
from flask.testing import FlaskClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.test import TestResponse

from latency_lab.core.access import configuration_signature
from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.toggles import Toggles
from latency_lab.edge.app import HIT_TIMING, UPSTREAM_TIMEOUT, create_edge_app
from latency_lab.lab.redis_server import RedisServer, free_port
from latency_lab.telemetry import configure
from latency_lab.telemetry import vocabulary as v
from tests.lab_fixtures import process_env, start_gunicorn, stop_process, wait_until_up

UPSTREAM_TIMING = 'db;dur=4.2;desc="3 statements", ext;dur=0.0;desc="0 calls"'
CACHE_CONTROL = {
    "public": "public, s-maxage=60",
    "no-store": "no-store",
    "private": "private, max-age=60",
    "short": "public, s-maxage=1",
}
EDGE_ON = "edge_cache=on"


# --- the fake service -------------------------------------------------------------------------
@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeService:
    """Answers like the lead service and records every request that reaches it."""

    received: list[Received] = field(default_factory=list)
    delay_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Flask:
        app = Flask("fake_service", static_folder=None)
        app.add_url_rule("/cc/<kind>", view_func=self._with_cache_control)
        app.add_url_rule("/no-etag", view_func=self._without_etag)
        app.add_url_rule(
            "/", defaults={"path": ""}, view_func=self._echo, methods=["GET", "POST", "PATCH"]
        )
        app.add_url_rule("/<path:path>", view_func=self._echo, methods=["GET", "POST", "PATCH"])
        app.before_request(self._record)
        app.after_request(self._service_headers)
        return app

    def count(self, target: str, method: str = "GET") -> int:
        with self._lock:
            return sum(1 for r in self.received if r.target == target and r.method == method)

    def _record(self) -> None:
        target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
        with self._lock:
            self.received.append(
                Received(request.method, target, dict(request.headers), request.get_data())
            )
        time.sleep(self.delay_s)

    def _with_cache_control(self, kind: str) -> Response:
        etag = f'"{kind}-v1"'
        if request.headers.get("If-None-Match") == etag:
            response = Response(status=304)
        else:
            response = Response(f"body of {kind}", mimetype="text/plain")
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = CACHE_CONTROL[kind]
        return response

    def _without_etag(self) -> Response:
        response = Response("no validator", mimetype="text/plain")
        response.headers["Cache-Control"] = CACHE_CONTROL["short"]
        return response

    def _echo(self, path: str) -> Response:
        response = Response(request.get_data() or b"echo", mimetype="application/octet-stream")
        if request.method == "GET":
            response.headers["Cache-Control"] = CACHE_CONTROL["public"]
        return response

    def _service_headers(self, response: Response) -> Response:
        response.headers["Server-Timing"] = UPSTREAM_TIMING
        traceparent = request.headers.get("traceparent")
        if traceparent:  # same trace as the caller's, as the instrumented service answers
            response.headers["traceresponse"] = f"00-{traceparent.split('-')[1]}-{'ab' * 8}-01"
        return response


@pytest.fixture
def fake_service() -> Iterator[tuple[FakeService, str]]:
    service = FakeService()
    server: BaseWSGIServer = make_server("127.0.0.1", free_port(), service.app(), threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield service, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


# --- the edge under test ----------------------------------------------------------------------
@pytest.fixture
def shared_state(redis_url: str) -> Iterator[SharedState]:
    state = SharedState(redis.Redis.from_url(redis_url))
    yield state
    state.close()


@dataclass
class EdgeUnderTest:
    client: FlaskClient
    spans: InMemorySpanExporter
    service: FakeService

    def get(self, path: str, toggles: str | None = None, **kwargs: Any) -> TestResponse:
        headers = kwargs.pop("headers", {})
        if toggles is not None:
            headers["X-Lab-Toggles"] = toggles
        response = self.client.get(path, headers=headers, **kwargs)
        response.get_data()  # the body is streamed: an entry is stored once it is read whole
        return response

    def trace(self, response: TestResponse) -> list[ReadableSpan]:
        trace_id = response.headers["traceresponse"].split("-")[1]
        return [
            s
            for s in self.spans.get_finished_spans()
            if s.context is not None and f"{s.context.trace_id:032x}" == trace_id
        ]


MakeEdge = Callable[..., EdgeUnderTest]


@pytest.fixture
def make_edge(
    fake_service: tuple[FakeService, str], shared_state: SharedState, redis_url: str, tmp_path: Path
) -> MakeEdge:
    service, url = fake_service

    def build(
        *,
        edge_cache: bool = True,
        service_url: str | None = None,
        timeout: httpx.Timeout | None = None,
        **settings: Any,
    ) -> EdgeUnderTest:
        shared_state.set_toggles(Toggles(edge_cache=edge_cache))
        exporter = InMemorySpanExporter()
        telemetry = configure(
            "latency-lab-edge-test", role="edge", processors=[SimpleSpanProcessor(exporter)]
        )
        config = Settings(
            REDIS_URL=redis_url,
            LAB_VAR_DIR=tmp_path,
            LAB_SERVICE_URL=service_url or url,
            **settings,
        )
        app = create_edge_app(
            config,
            shared_state=shared_state,
            telemetry=telemetry,
            upstream_timeout=timeout or UPSTREAM_TIMEOUT,
        )
        return EdgeUnderTest(app.test_client(), exporter, service)

    return build


# --- on and off -------------------------------------------------------------------------------
def test_on_second_fetch_of_a_static_asset_does_not_reach_the_service(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=True)

    first = edge.get("/cc/public")
    second = edge.get("/cc/public")

    assert edge.service.count("/cc/public") == 1
    assert first.data == second.data == b"body of public"
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.headers["Server-Timing"] == f'{UPSTREAM_TIMING}, cache-edge;desc="miss"'
    assert second.headers["Server-Timing"] == HIT_TIMING
    assert second.headers["Age"] == "0"
    assert second.headers["ETag"] == '"public-v1"'


def test_head_is_cached_apart_from_get(make_edge: MakeEdge) -> None:
    edge = make_edge()

    heads = [edge.client.head("/cc/public") for _ in range(2)]
    get = edge.get("/cc/public")

    assert [r.headers["X-Cache"] for r in heads] == ["MISS", "HIT"]
    assert heads[1].data == b"" and heads[1].headers["Content-Length"] == "14"
    assert get.headers["X-Cache"] == "MISS" and get.data == b"body of public"
    assert edge.service.count("/cc/public", "HEAD") == 1


def test_off_every_fetch_reaches_the_service(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=False)

    responses = [edge.get("/cc/public") for _ in range(3)]

    assert edge.service.count("/cc/public") == 3
    assert {r.headers["X-Cache"] for r in responses} == {"BYPASS"}
    assert {r.headers["Server-Timing"] for r in responses} == {UPSTREAM_TIMING}


@pytest.mark.parametrize("kind", ["no-store", "private"])
def test_no_store_and_private_are_never_cached(make_edge: MakeEdge, kind: str) -> None:
    edge = make_edge()

    responses = [edge.get(f"/cc/{kind}") for _ in range(3)]

    assert edge.service.count(f"/cc/{kind}") == 3
    assert {r.headers["X-Cache"] for r in responses} == {"MISS"}
    assert {r.status_code for r in responses} == {200}


def test_expired_entries_are_refetched_or_revalidated_with_their_etag(
    make_edge: MakeEdge,
) -> None:
    edge = make_edge()
    assert edge.get("/cc/short").headers["X-Cache"] == "MISS"
    assert edge.get("/no-etag").headers["X-Cache"] == "MISS"
    assert edge.get("/cc/short").headers["X-Cache"] == "HIT"

    time.sleep(2.05)  # s-maxage=1, Date has one-second resolution
    revalidated = edge.get("/cc/short")
    refetched = edge.get("/no-etag")

    conditional = [r for r in edge.service.received if r.target == "/cc/short"]
    assert len(conditional) == 2
    assert "If-None-Match" not in conditional[0].headers
    assert conditional[1].headers["If-None-Match"] == '"short-v1"'  # answered 304
    assert revalidated.status_code == 200 and revalidated.data == b"body of short"
    assert revalidated.headers["X-Cache"] == "MISS"
    assert edge.service.count("/no-etag") == 2 and refetched.data == b"no validator"
    # The 304 made the entry fresh again.
    assert edge.get("/cc/short").headers["X-Cache"] == "HIT"
    assert edge.service.count("/cc/short") == 2


def test_a_successful_write_invalidates_its_url(make_edge: MakeEdge) -> None:
    edge = make_edge()
    edge.get("/api/leads/5")
    assert edge.get("/api/leads/5").headers["X-Cache"] == "HIT"

    patched = edge.client.patch(
        "/api/leads/5", data=b'{"status": "won"}', content_type="application/json"
    )

    assert patched.headers["X-Cache"] == "BYPASS"
    assert edge.service.received[-1].body == b'{"status": "won"}'
    assert edge.get("/api/leads/5").headers["X-Cache"] == "MISS"


def test_requests_are_forwarded_faithfully(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=False)

    response = edge.client.post(
        "/api/leads/caf%C3%A9?status=new&tag=a%2Fb",
        data=b"payload",
        headers={"Connection": "close, X-Hop", "X-Hop": "1", "X-Custom": "kept"},
    )

    assert response.data == b"payload"
    received = edge.service.received[-1]
    assert received.method == "POST"
    assert received.target == "/api/leads/caf%C3%A9?status=new&tag=a%2Fb"
    assert received.headers["X-Custom"] == "kept"
    assert "X-Hop" not in received.headers
    assert received.headers["X-Forwarded-For"] == "127.0.0.1"


# --- the override header ----------------------------------------------------------------------
def test_override_from_loopback_decides_and_keys_the_cache(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=False)

    pinned = [edge.get("/cc/public", toggles=EDGE_ON) for _ in range(2)]
    other_config = edge.get("/cc/public", toggles=f"{EDGE_ON},eager_loading=on")
    shared_off = edge.get("/cc/public")

    assert [r.headers["X-Cache"] for r in pinned] == ["MISS", "HIT"]
    assert other_config.headers["X-Cache"] == "MISS"  # another configuration, another entry
    assert shared_off.headers["X-Cache"] == "BYPASS"
    assert edge.service.count("/cc/public") == 3
    # The service is told the configuration the edge applied, whole: it applies the same one.
    forwarded = [r.headers["X-Lab-Toggles"] for r in edge.service.received]
    assert forwarded == [
        Toggles(edge_cache=True).label(),
        Toggles(edge_cache=True, eager_loading=True).label(),
        Toggles().label(),
    ]


def test_override_from_elsewhere_is_ignored_and_not_forwarded(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=False)
    remote = {"REMOTE_ADDR": "203.0.113.9"}

    responses = [edge.get("/cc/public", toggles=EDGE_ON, environ_base=remote) for _ in range(2)]

    assert {r.headers["X-Cache"] for r in responses} == {"BYPASS"}
    # What reaches the service is the edge's decision (the shared toggles), not the caller's.
    assert edge.service.received[0].headers["X-Lab-Toggles"] == Toggles().label()
    assert "X-Lab-Toggles-Signature" not in edge.service.received[0].headers


def test_with_a_token_the_edge_signs_the_configuration_it_forwards(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=False, LAB_ADMIN_TOKEN="s3cret")
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    forged = {"X-Lab-Toggles-Signature": "0" * 64}

    edge.get("/cc/public", toggles=EDGE_ON, environ_base=remote, headers=forged)

    received = edge.service.received[0].headers
    configuration = Toggles().label()  # the caller's override was not an admin's: ignored
    assert received["X-Lab-Toggles"] == configuration
    assert received["X-Lab-Toggles-Signature"] == configuration_signature(configuration, "s3cret")
    assert "Authorization" not in received and "X-Lab-Admin-Token" not in received


def test_override_with_the_admin_token_from_anywhere(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=False, LAB_ADMIN_TOKEN="s3cret")
    remote = {"REMOTE_ADDR": "203.0.113.9"}

    without = edge.get("/cc/public", toggles=EDGE_ON)  # loopback is not enough with a token
    with_token = edge.get(
        "/cc/public",
        toggles=EDGE_ON,
        environ_base=remote,
        headers={"Authorization": "Bearer s3cret"},
    )

    assert without.headers["X-Cache"] == "BYPASS"
    assert with_token.headers["X-Cache"] == "MISS"


def test_bad_override_is_a_400_naming_the_problem(make_edge: MakeEdge) -> None:
    edge = make_edge()

    response = edge.get("/cc/public", toggles="edge_cache=maybe")
    unknown = edge.get("/cc/public", toggles="warp_drive=on")

    assert response.status_code == unknown.status_code == 400
    assert response.json is not None and unknown.json is not None
    assert "edge_cache" in response.json["error"] and "maybe" in response.json["error"]
    assert "warp_drive" in unknown.json["error"]
    assert edge.service.received == []


# --- telemetry --------------------------------------------------------------------------------
def test_spans_and_trace_headers_tell_hits_from_misses(make_edge: MakeEdge) -> None:
    edge = make_edge()

    miss = edge.get("/api/leads?limit=100")
    hit = edge.get("/api/leads?limit=100")

    miss_spans = {s.name: s for s in edge.trace(miss)}
    hit_spans = {s.name: s for s in edge.trace(hit)}
    lookup = v.cache_span_name(v.CacheLayer.EDGE)
    assert set(miss_spans) == {v.SPAN_EDGE, lookup, "GET"}  # GET: the call to the service
    assert set(hit_spans) == {v.SPAN_EDGE, lookup}  # nothing left the edge
    for spans, outcome in ((miss_spans, "miss"), (hit_spans, "hit")):
        server, cache = spans[v.SPAN_EDGE].attributes or {}, spans[lookup].attributes or {}
        assert server[v.CACHE_LAYER] == cache[v.CACHE_LAYER] == "edge"
        assert server[v.CACHE_OUTCOME] == cache[v.CACHE_OUTCOME] == outcome
        assert server[v.REQ_CACHE_HITS_PREFIX + "edge"] == int(outcome == "hit")
        assert server[v.REQ_CACHE_MISSES_PREFIX + "edge"] == int(outcome == "miss")
        assert len(str(cache[v.CACHE_KEY_HASH])) == 16
        assert server[v.CONFIG_KEY] == Toggles(edge_cache=True).label()
    assert (hit_spans[v.SPAN_EDGE].attributes or {})[v.REQ_DB_STATEMENTS] == 0

    # On a miss the service's traceresponse (same trace) passes through; on a hit it is ours.
    sent_traceparent = edge.service.received[0].headers["Traceparent"]
    assert miss.headers["traceresponse"] == f"00-{sent_traceparent.split('-')[1]}-{'ab' * 8}-01"
    server_context = hit_spans[v.SPAN_EDGE].context
    assert server_context is not None
    assert hit.headers["traceresponse"] == (
        f"00-{server_context.trace_id:032x}-{server_context.span_id:016x}-"
        f"{int(server_context.trace_flags):02x}"
    )


def test_bypass_records_no_cache_outcome(make_edge: MakeEdge) -> None:
    edge = make_edge(edge_cache=False)
    response = edge.get("/api/leads")
    server = next(s for s in edge.trace(response) if s.name == v.SPAN_EDGE)
    assert v.CACHE_OUTCOME not in (server.attributes or {})
    assert "cache-edge" not in response.headers["Server-Timing"]


# --- failures and the edge's own endpoints ----------------------------------------------------
def test_service_down_is_a_502_in_json(make_edge: MakeEdge) -> None:
    edge = make_edge(service_url=f"http://127.0.0.1:{free_port()}")

    response = edge.get("/api/leads")

    assert response.status_code == 502
    assert response.json is not None and response.json["error"] == "service unavailable"
    assert "ConnectError" in response.json["detail"]
    assert response.headers["traceresponse"].startswith("00-")


def test_service_too_slow_is_a_504_in_json(make_edge: MakeEdge) -> None:
    edge = make_edge(timeout=httpx.Timeout(0.2))
    edge.service.delay_s = 0.6

    response = edge.get("/api/leads")

    assert response.status_code == 504
    assert response.json is not None and response.json["error"] == "service timed out"


def test_health_and_purge(make_edge: MakeEdge) -> None:
    edge = make_edge()
    health = edge.get("/edge/healthz")
    assert health.status_code == 200 and health.json is not None
    assert health.json["status"] == "ok"

    edge.get("/cc/public")
    refused = edge.client.post("/edge/purge", environ_base={"REMOTE_ADDR": "198.51.100.2"})
    assert refused.status_code == 403 and refused.is_json
    assert edge.get("/cc/public").headers["X-Cache"] == "HIT"

    assert edge.client.post("/edge/purge").status_code == 200
    assert edge.get("/cc/public").headers["X-Cache"] == "MISS"
    assert edge.service.count("/cc/public") == 2


# --- the real entry point ---------------------------------------------------------------------
def test_gunicorn_entry_point_caches_in_front_of_the_service(
    fake_service: tuple[FakeService, str],
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    service, service_url = fake_service
    state = SharedState(redis.Redis.from_url(redis_url))
    state.set_toggles(Toggles(edge_cache=True))
    state.close()
    port = free_port()
    env = process_env(
        REDIS_URL=redis_url,
        LAB_VAR_DIR=str(tmp_path),
        LAB_SERVICE_URL=service_url,
        LAB_EDGE_PORT=str(port),
    )
    log_file = tmp_path / "edge.log"
    process = start_gunicorn(
        "latency_lab.edge.app:create_edge_app()", port=port, env=env, log_file=log_file
    )
    edge = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{edge}/edge/healthz", process, log_file)
        first = httpx.get(f"{edge}/cc/public", timeout=5)
        second = httpx.get(f"{edge}/cc/public", timeout=5)
        down = httpx.get(
            f"{edge}/cc/public", headers={"X-Lab-Toggles": "edge_cache=off"}, timeout=5
        )
    finally:
        stop_process(process)

    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert down.headers["x-cache"] == "BYPASS"
    assert second.text == "body of public"
    assert service.count("/cc/public") == 2
    assert len(second.headers.get_list("date")) == 1
    assert "Traceback" not in log_file.read_text()
