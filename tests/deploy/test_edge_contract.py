"""The embedded edge and the nginx edge keep one contract (tests/deploy/edge_contract.py).

Both stand in front of the real lead service (SQLite, the session's Redis, the third-party
simulator), served over HTTP from a thread, which counts every request that reaches it. The
embedded edge is ``create_edge_app``; the nginx edge is deploy/nginx/lab-edge.conf run by a real
nginx on a loopback port (skipped, with the reason, where nginx is not installed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import redis
from werkzeug.serving import make_server

from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState
from latency_lab.core.toggles import TOGGLE_HEADER, Toggles
from latency_lab.edge.app import EDGE_ONLY_TIMING, HIT_TIMING, MISS_TIMING, create_edge_app
from latency_lab.lab.redis_server import free_port
from latency_lab.telemetry import configure
from latency_lab.telemetry.accounting import parse_server_timing
from tests.deploy import nginx_edge
from tests.deploy.edge_contract import (
    ADMIN_TOKEN,
    EDGE_MAX_AGE_S,
    NEW_LEAD,
    SCENARIOS,
    Scenario,
    Step,
    Verdict,
)
from tests.lab_fixtures import ThirdParty, make_lab

EDGES = ("embedded", "nginx")


# --- the service, counting what reaches it -----------------------------------------------------
@dataclass
class Reached:
    """Requests that reached the service: (method, path, status, traceresponse)."""

    requests: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def last_traceresponse(self) -> str | None:
        with self.lock:
            return self.requests[-1][3]


def counting(app: Any, reached: Reached) -> Callable[..., Any]:
    """WSGI middleware recording every request and the status and trace the service answered."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def recording_start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            trace = next((v for k, v in headers if k.lower() == "traceresponse"), None)
            with reached.lock:
                reached.requests.append(
                    (environ["REQUEST_METHOD"], environ["PATH_INFO"], int(status[:3]), trace)
                )
            return start_response(status, headers, *args)

        return app(environ, recording_start)

    return middleware


@dataclass
class Upstream:
    url: str
    reached: Reached


@pytest.fixture
def start_service(
    sqlite_url: str, lab_redis: str, thirdparty: ThirdParty, tmp_path: Path
) -> Iterator[Callable[[Toggles], Upstream]]:
    stops: list[Callable[[], None]] = []

    def start(shared: Toggles) -> Upstream:
        state = SharedState(redis.Redis.from_url(lab_redis))
        state.set_toggles(shared)
        state.close()
        lab = make_lab(
            sqlite_url,
            lab_redis,
            thirdparty.url,
            tmp_path,
            LAB_EDGE_MAX_AGE=EDGE_MAX_AGE_S,
            LAB_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        reached = Reached()
        server = make_server(
            "127.0.0.1", free_port(), counting(lab.app.wsgi_app, reached), threaded=True
        )
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()

        def stop() -> None:
            server.shutdown()
            thread.join(5)
            lab.close()

        stops.append(stop)
        return Upstream(f"http://127.0.0.1:{server.server_port}", reached)

    yield start
    for stop in stops:
        stop()


# --- the two front doors -----------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class FrontDoor(Protocol):
    def send(self, method: str, path: str, headers: dict[str, str], json: Any = None) -> Answer: ...


class EmbeddedEdge:
    def __init__(self, upstream_url: str, redis_url: str, var_dir: Path) -> None:
        settings = Settings(
            REDIS_URL=redis_url,
            LAB_VAR_DIR=var_dir,
            LAB_SERVICE_URL=upstream_url,
            LAB_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        self.state = SharedState(redis.Redis.from_url(redis_url))
        app = create_edge_app(
            settings,
            shared_state=self.state,
            telemetry=configure("latency-lab-edge-contract", role="edge"),
        )
        self.client = app.test_client()

    def send(self, method: str, path: str, headers: dict[str, str], json: Any = None) -> Answer:
        response = self.client.open(path, method=method, headers=headers, json=json)
        body = response.get_data()  # streamed: the entry is stored once the body is read
        return Answer(
            response.status_code, {k.lower(): v for k, v in response.headers.items()}, body
        )


class NginxEdge:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, trust_env=False, timeout=10)

    def send(self, method: str, path: str, headers: dict[str, str], json: Any = None) -> Answer:
        response = self.client.request(method, path, headers=headers, json=json)
        return Answer(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )


@pytest.fixture
def front_door(
    request: pytest.FixtureRequest,
    start_service: Callable[[Toggles], Upstream],
    lab_redis: str,
    tmp_path: Path,
) -> Iterator[Callable[[Toggles], tuple[FrontDoor, Upstream]]]:
    kind: str = request.param
    binary = nginx_edge.nginx_binary()
    if kind == "nginx" and binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx): only the embedded edge runs")
    with ExitStack() as stack:

        def build(shared: Toggles) -> tuple[FrontDoor, Upstream]:
            upstream = start_service(shared)
            if kind == "embedded":
                edge = EmbeddedEdge(upstream.url, lab_redis, tmp_path)
                stack.callback(edge.state.close)
                return edge, upstream
            assert binary is not None
            workdir = tmp_path / "nginx"
            workdir.mkdir()
            url = stack.enter_context(
                nginx_edge.running_nginx(
                    binary, workdir, upstream=upstream.url.removeprefix("http://"), port=free_port()
                )
            )
            return NginxEdge(url), upstream

        yield build


# --- the contract --------------------------------------------------------------------------------
def _headers(step: Step) -> dict[str, str]:
    if step.override is None:
        return {}
    return {TOGGLE_HEADER: step.override, "Authorization": f"Bearer {ADMIN_TOKEN}"}


def _trace_id(traceresponse: str | None) -> str | None:
    return traceresponse.split("-")[1] if traceresponse else None


def _check_timing(step: Step, answer: Answer) -> None:
    timing = answer.headers.get("server-timing", "")
    if step.verdict is Verdict.HIT:
        assert timing == HIT_TIMING
    elif step.verdict is Verdict.MISS:
        assert timing.endswith(f", {MISS_TIMING}"), timing
        assert parse_server_timing(timing).statements is not None, timing
    else:
        assert "cache-edge" not in timing and parse_server_timing(timing).statements is not None


@pytest.mark.parametrize("front_door", EDGES, indirect=True)
@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=list(SCENARIOS))
def test_edge_keeps_the_contract(
    front_door: Callable[[Toggles], tuple[FrontDoor, Upstream]], scenario: str
) -> None:
    plan: Scenario = SCENARIOS[scenario]
    edge, upstream = front_door(plan.shared)
    stored: dict[tuple[str, str, str | None], Answer] = {}

    for number, step in enumerate(plan.steps, start=1):
        time.sleep(step.wait_s)
        before = upstream.reached.count()
        answer = edge.send(
            step.method, step.path, _headers(step), json=NEW_LEAD if step.method == "POST" else None
        )
        reached = upstream.reached.count() > before
        where = f"step {number} ({step.method} {step.path}, override {step.override})"

        assert answer.status == step.status, f"{where}: {answer.body[:200]!r}"
        assert answer.headers.get("x-cache") == step.verdict, where
        assert reached == step.reaches_service, where
        _check_timing(step, answer)
        key = (step.method, step.path, step.override)
        if step.verdict is Verdict.HIT:
            first = stored[key]
            assert answer.body == first.body, where
            # A hit is not the stored response's trace: the edge's own, or none (nginx).
            hit_trace = _trace_id(answer.headers.get("traceresponse"))
            assert hit_trace != _trace_id(first.headers.get("traceresponse")), where
        else:
            if key not in stored:  # a fresh fetch: the service's own trace comes back
                assert _trace_id(answer.headers.get("traceresponse")) == _trace_id(
                    upstream.reached.last_traceresponse()
                ), where
            if step.verdict is Verdict.MISS and answer.status == 200:
                stored.setdefault(key, answer)


@pytest.mark.parametrize("kind", EDGES)
def test_service_down_is_a_502_in_json(kind: str, lab_redis: str, tmp_path: Path) -> None:
    down = f"127.0.0.1:{free_port()}"
    if kind == "embedded":
        edge = EmbeddedEdge(f"http://{down}", lab_redis, tmp_path)
        answer = edge.send("GET", "/api/leads", {})
        edge.state.close()
    else:
        binary = nginx_edge.nginx_binary()
        if binary is None:
            pytest.skip("nginx is not installed (apt-get install nginx)")
        with nginx_edge.running_nginx(binary, tmp_path, upstream=down, port=free_port()) as url:
            answer = NginxEdge(url).send("GET", "/api/leads", {})

    assert answer.status == 502
    assert answer.headers["content-type"].startswith("application/json")
    assert httpx.Response(200, content=answer.body).json()["error"] == "service unavailable"
    assert answer.headers["server-timing"] == EDGE_ONLY_TIMING
