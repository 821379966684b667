"""Fixtures for the dashboard's tests: a seeded trace store, a stand-in lab, the app under test.

The stand-in lab is a small real HTTP server on a free port that speaks the admin API's contract
(``GET|PUT /admin/toggles`` and ``/admin/world``, validated with the service's own ``Toggles``
and ``World``, the admin token when one is set) and answers every other path the way the edge
does for the load generator (``Server-Timing`` with statements). It records what it received,
so a test can check that a switch on the page reached the lab.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from streamlit.testing.v1 import AppTest
from werkzeug.serving import BaseWSGIServer, make_server

from latency_lab.core.access import presented_token
from latency_lab.core.toggles import ToggleError, Toggles
from latency_lab.core.world import World, WorldError
from latency_lab.lab.redis_server import free_port
from latency_lab.telemetry.store import TraceStore
from tests.dashboard.factories import Workshop, workshop

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
LIST_STATEMENTS = 31
PROFILED_TRACE = "feed" * 8  # the trace id the stand-in lab answers a profiled request with


@dataclass
class FakeLab:
    """What the stand-in lab holds and saw."""

    url: str
    port: int
    token: str | None = None
    toggles: Toggles = field(default_factory=Toggles)
    world: World = field(default_factory=World)
    puts: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    profiled: list[tuple[str, str | None]] = field(default_factory=list)  # path, X-Lab-Toggles


def _fake_lab_app(lab: FakeLab) -> Flask:
    app = Flask("fake_lab")

    @app.before_request
    def _token() -> ResponseReturnValue | None:
        refused = lab.token and presented_token(request.headers) != lab.token
        if request.path.startswith("/admin") and refused:
            return jsonify(error="the admin API needs the admin token", status=401), 401
        return None

    @app.route("/admin/toggles", methods=["GET", "PUT"])
    def toggles() -> ResponseReturnValue:
        if request.method == "PUT":
            lab.puts.append(("toggles", request.get_json()))
            try:
                lab.toggles = Toggles.from_json(request.get_json(), base=lab.toggles)
            except ToggleError as exc:
                return jsonify(error=str(exc), status=400), 400
        return jsonify(toggles=lab.toggles.model_dump(), label=lab.toggles.label())

    @app.route("/admin/world", methods=["GET", "PUT"])
    def world() -> ResponseReturnValue:
        if request.method == "PUT":
            lab.puts.append(("world", request.get_json()))
            try:
                lab.world = World.from_json(request.get_json(), base=lab.world)
            except WorldError as exc:
                return jsonify(error=str(exc), status=400), 400
        return jsonify(lab.world.model_dump())

    @app.route("/<path:path>", methods=["GET", "POST"])
    def front_door(path: str) -> ResponseReturnValue:
        lab.requests.append(f"{request.method} /{path}")
        statements = LIST_STATEMENTS if not lab.toggles.eager_loading else 1
        timing = f'db;dur=1.0;desc="{statements} statements", ext;dur=0.5;desc="1 calls"'
        headers = {"Server-Timing": timing}
        if request.headers.get("X-Lab-Profile") == "on":
            lab.profiled.append(
                (request.full_path.rstrip("?"), request.headers.get("X-Lab-Toggles"))
            )
            headers["traceresponse"] = f"00-{PROFILED_TRACE}-{'1' * 16}-01"
        return jsonify(ok=True), 200, headers

    return app


@pytest.fixture
def fake_lab() -> Iterator[FakeLab]:
    port = free_port()
    lab = FakeLab(url=f"http://127.0.0.1:{port}", port=port)
    server: BaseWSGIServer = make_server("127.0.0.1", port, _fake_lab_app(lab), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield lab
    server.shutdown()
    thread.join(5)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'traces.db'}"


@pytest.fixture
def recorded(store_url: str) -> Workshop:
    """A trace store holding a workshop's first minutes (all off, eager, all on)."""
    store = TraceStore(store_url).create()
    try:
        return workshop(store, leads=(LIST_STATEMENTS - 1) // 3)
    finally:
        store.close()


def _clear_streamlit_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def lab_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store_url: str, fake_lab: FakeLab
) -> Iterator[FakeLab]:
    """The dashboard's environment: the seeded store's URL, the stand-in lab as service and
    edge, no Redis; Streamlit's caches emptied so settings are read again."""
    for name in ("REDIS_URL", "LAB_ADMIN_TOKEN", "LAB_DATABASE_URL", "LAB_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAB_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("LAB_TRACE_STORE_URL", store_url)
    monkeypatch.setenv("LAB_SERVICE_URL", fake_lab.url)
    monkeypatch.setenv("LAB_EDGE_PORT", str(fake_lab.port))
    _clear_streamlit_caches()
    yield fake_lab
    _clear_streamlit_caches()


@pytest.fixture
def open_page() -> Callable[[str], AppTest]:
    """Run the dashboard and switch to one page (``live``, ``compare``, ...)."""

    def run(page: str) -> AppTest:
        app = AppTest.from_file(str(APP), default_timeout=30)
        app.run()
        if page != "live":
            app.switch_page(f"views/{page}.py")
            app.run()
        assert not app.exception, [e.value for e in app.exception]
        return app

    return run
