"""Nobody gets in: loopback by default, a token to go further, and no personal data in traces."""

from __future__ import annotations

import hmac
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from latency_lab.core.access import configuration_signature
from latency_lab.core.settings import Settings
from latency_lab.lab.redis_server import RedisServer, free_port
from latency_lab.lab.runtime import LabOptions, lab_tiers
from latency_lab.telemetry.redaction import EMAIL, mask_statement, mask_text
from latency_lab.telemetry.store import TraceStore
from tests.lab_fixtures import Lab, eventually, process_env, start_gunicorn, stop_process
from tests.reliability.conftest import Stack

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPOSED = {"LAB_HOST": "0.0.0.0"}


# --- where the lab listens ---------------------------------------------------------------------
def test_every_process_binds_loopback_by_default(tmp_path: Path) -> None:
    settings = Settings(LAB_VAR_DIR=tmp_path)
    specs = [spec for tier in lab_tiers(settings, LabOptions(), "redis://x") for spec in tier]

    listening = [spec for spec in specs if spec.port is not None]
    assert {spec.name for spec in listening} >= {"thirdparty", "service", "edge"}
    for spec in listening:
        argv = " ".join(spec.argv)
        assert f"127.0.0.1:{spec.port}" in argv or "--server.address 127.0.0.1" in argv, argv
    assert RedisServer().host == "127.0.0.1"


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "latency_lab.worker.process"],
        [sys.executable, "-m", "latency_lab.worker.relay"],
        [sys.executable, "-m", "latency_lab.cli.main", "up", "--no-dashboard"],
    ],
    ids=["worker", "relay", "latency-lab up"],
)
def test_a_process_refuses_to_start_exposed_without_a_token(
    argv: list[str], tmp_path: Path
) -> None:
    env = process_env(**EXPOSED, LAB_VAR_DIR=str(tmp_path), REDIS_URL="redis://127.0.0.1:1/0")
    done = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    assert "LAB_HOST=0.0.0.0" in done.stderr and "LAB_ADMIN_TOKEN" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "factory",
    ["latency_lab.service.app:create_app()", "latency_lab.edge.app:create_edge_app()",
     "latency_lab.simulator.app:create_thirdparty_app()"],
    ids=["service", "edge", "thirdparty"],
)  # fmt: skip
def test_a_server_refuses_to_start_exposed_without_a_token(
    factory: str, redis_url: str, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    env = process_env(**EXPOSED, LAB_VAR_DIR=str(tmp_path), REDIS_URL=redis_url)
    process = start_gunicorn(factory, port=free_port(), env=env, log_file=log_file)
    try:
        exit_code = process.wait(timeout=60)
    finally:
        stop_process(process)

    assert exit_code != 0
    assert "set LAB_ADMIN_TOKEN" in log_file.read_text()


def test_with_a_token_an_exposed_service_starts(redis_url: str, tmp_path: Path) -> None:
    env = process_env(**EXPOSED, LAB_ADMIN_TOKEN="s3cret", LAB_VAR_DIR=str(tmp_path),
                      REDIS_URL=redis_url)  # fmt: skip
    port = free_port()
    process = start_gunicorn("latency_lab.service.app:create_app()", port=port, env=env,
                             log_file=tmp_path / "service.log")  # fmt: skip
    try:
        up = eventually(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout_s=30)
        assert up, (tmp_path / "service.log").read_text()
    finally:
        stop_process(process)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --- the admin token -------------------------------------------------------------------------
def test_with_a_token_admin_and_overrides_need_it_even_from_loopback(lab_factory: Any) -> None:
    lab: Lab = lab_factory(LAB_ADMIN_TOKEN="s3cret")
    bearer = {"Authorization": "Bearer s3cret"}
    header = {"X-Lab-Admin-Token": "s3cret"}

    for path in ("/admin/toggles", "/admin/world"):
        assert lab.client.get(path).status_code == 401
        assert lab.client.get(path, headers={"Authorization": "Bearer s3cre"}).status_code == 401
        assert lab.client.get(path, headers={"X-Lab-Admin-Token": "S3CRET"}).status_code == 401
        assert lab.client.get(path, headers=bearer).status_code == 200
        assert lab.client.get(path, headers=header).status_code == 200
    refused = lab.client.put("/admin/toggles", json={"eager_loading": True})
    assert refused.status_code == 401 and "admin token" in refused.json["error"]
    assert (
        lab.client.get("/admin/toggles", headers=bearer).json["toggles"]["eager_loading"] is False
    )

    override = {"X-Lab-Toggles": "eager_loading=on"}
    assert lab.client.get("/api/leads?limit=1", headers=override).status_code == 403
    allowed = lab.client.get("/api/leads?limit=5", headers=override | bearer)
    assert allowed.status_code == 200
    assert 'desc="1 statements"' in allowed.headers["Server-Timing"]
    assert lab.client.get("/api/leads?limit=1").status_code == 200  # the API itself stays open


def test_the_edges_signed_configuration_pins_one_request_and_grants_nothing_else(
    lab_factory: Any,
) -> None:
    lab: Lab = lab_factory(LAB_ADMIN_TOKEN="s3cret")
    eager = "eager_loading=on"
    signed = {
        "X-Lab-Toggles": eager,
        "X-Lab-Toggles-Signature": configuration_signature(eager, "s3cret"),
    }
    forged = signed | {"X-Lab-Toggles-Signature": configuration_signature(eager, "guess")}
    replayed = signed | {"X-Lab-Toggles": "eager_loading=on,redis_cache=on"}

    pinned = lab.client.get("/api/leads?limit=5", headers=signed)

    assert pinned.status_code == 200 and 'desc="1 statements"' in pinned.headers["Server-Timing"]
    assert lab.client.get("/api/leads?limit=5", headers=forged).status_code == 403
    assert lab.client.get("/api/leads?limit=5", headers=replayed).status_code == 403
    assert lab.client.get("/admin/toggles", headers=signed).status_code == 401


def test_the_token_is_compared_in_constant_time(
    lab_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab: Lab = lab_factory(LAB_ADMIN_TOKEN="s3cret")
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    lab.client.get("/admin/toggles", headers={"Authorization": "Bearer guess"})
    lab.client.get("/api/leads?limit=1", headers={"X-Lab-Toggles": "eager_loading=on",
                                                  "X-Lab-Admin-Token": "guess2"})  # fmt: skip

    assert (b"guess", b"s3cret") in compared and (b"guess2", b"s3cret") in compared


# --- no personal data in traces -------------------------------------------------------------
def test_masking_keeps_shapes_and_drops_values() -> None:
    assert mask_text("to ana.lopez+crm@sub.example.co.uk now") == "to [email] now"
    assert mask_statement(
        "SELECT * FROM leads WHERE email = 'a@b.io' AND score > 70 AND id IN (?, ?) "
        "AND lead_tags_1.tag_id = %(tag_id_1)s LIMIT 100"
    ) == (
        "SELECT * FROM leads WHERE email = ? AND score > ? AND id IN (?, ?) "
        "AND lead_tags_1.tag_id = %(tag_id_1)s LIMIT ?"
    )


def test_no_email_company_or_sql_literal_reaches_the_trace_store(stack: Stack) -> None:
    url = stack.start_service()
    stack.start_worker()
    stack.start_relay()
    companies = _seeded_companies(stack.database_url)
    created_emails = [f"private.person{n}@secret-corp.example" for n in range(4)]
    with httpx.Client(base_url=url, timeout=30) as client:
        for n, email in enumerate(created_emails):
            offload = "on" if n % 2 else "off"
            lead = client.post(
                "/api/leads",
                json={"company": f"Secret Corp {n}", "contact_name": "Private Person",
                      "email": email, "owner_id": 2, "metadata": {"contact": email}},
                headers={"X-Lab-Toggles": f"async_offload={offload}"},
            ).json()  # fmt: skip
            client.patch(f"/api/leads/{lead['id']}", json={"status": "won"})
            client.get(f"/api/leads/{lead['id']}")
        for toggles in ("eager_loading=off", "eager_loading=on,redis_cache=on"):
            client.get("/api/leads?limit=20", headers={"X-Lab-Toggles": toggles})
        client.get("/api/stats")
        client.get(f"/api/leads?email={created_emails[0]}")  # refused, but the URL is traced
        client.get("/api/leads", params={"tag": "ceo@secret-corp.example"})
    delivered = eventually(lambda: stack.outbox_counts()["delivered"] >= 18, timeout_s=30)
    assert delivered, stack.outbox_counts()

    # The last request's spans are in the store (exported every 100 ms, in the background).
    exported = eventually(
        lambda: any("tag=" in row for row in _all_spans(stack.trace_store_url)), timeout_s=15
    )
    assert exported, "the last request never reached the trace store"
    rows = _all_spans(stack.trace_store_url)
    assert len(rows) > 100
    everything = "\n".join(rows)
    assert "[email]" in everything  # the URLs with an address were traced, masked
    assert not EMAIL.search(everything), EMAIL.search(everything)
    leaked = [c for c in [*companies, "Secret Corp"] if c in everything]
    assert leaked == []
    statements = _statements(stack.trace_store_url)
    assert statements and not [s for s in statements if re.search(r"'[^']*'", s)]


def _seeded_companies(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(text("SELECT company FROM leads"))]
    finally:
        engine.dispose()


def _all_spans(store_url: str) -> list[str]:
    store = TraceStore(store_url)
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(text("SELECT name, statement, attributes FROM spans"))
            spans = [
                json.dumps([name, statement, attributes]) for name, statement, attributes in rows
            ]
            requests = connection.execute(text("SELECT route, target FROM requests"))
            return spans + [f"{route} {target}" for route, target in requests]
    finally:
        store.close()


def _statements(store_url: str) -> list[str]:
    store = TraceStore(store_url)
    try:
        with store.engine.connect() as connection:
            query = text("SELECT DISTINCT statement FROM spans WHERE statement IS NOT NULL")
            return [row[0] for row in connection.execute(query)]
    finally:
        store.close()
