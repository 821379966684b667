"""`latency-lab up` survives its own parts dying: each is started again, and nothing is lost.

One lab for the module, started as a user starts it (a subprocess running ``latency-lab up``
with its own Redis, two RQ workers and the dashboard), with offload on and a fast world. While
a mixed load (reads and creates, through the edge) runs, each part is killed in turn with
SIGKILL; after each: the lab still runs, the part is back (``var/lab.json`` says ``up`` with a
new PID) within 10 s, requests failed only while it was down. At the end every created lead is
readable and each one's email, ``lead.created`` event and enrichment was delivered exactly once
(counted at the simulator). Then a worker is stopped (SIGSTOP): its job is taken over as
abandoned and ``latency-lab status`` says it is not responding. Last, the dashboard's port is
taken while it is down, so it dies on every start: it is given up on, and the lab goes on.

What is measured is printed: run with ``-s`` to see the restart times and failed requests::

    .venv/bin/pytest tests/reliability/test_supervisor.py -s           # short (make test)
    .venv/bin/pytest tests/reliability/test_supervisor.py -s -m slow   # each kill under longer load
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
from rq import Queue

from latency_lab.core.settings import Settings
from latency_lab.service.db import build_engine, session_factory
from latency_lab.service.offload import QUEUE_NAME
from latency_lab.service.outbox import counts
from tests.lab_fixtures import FAST_WORLD, eventually, lab_up_env
from tests.reliability.conftest import running_jobs
from tests.reliability.test_redis_outage import delivered_once_each

REPO_ROOT = Path(__file__).resolve().parents[2]
KILL_ORDER = ("worker-1", "outbox-relay", "edge", "thirdparty", "service", "dashboard", "redis")
BACK_WITHIN_S = 10.0
SLOW_PROVIDER = {"latency_ms": 3000.0, "jitter_ms": 0.0}
# Reads enqueue their (best-effort) analytics too: under the long load two workers fall behind,
# and the side effects of creates wait their turn in the queue.
DRAIN_S = 240.0

pytestmark = pytest.mark.timeout(400)


# --- the lab, as a user runs it --------------------------------------------------------------
@dataclass
class RunningLab:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    workdir: Path

    @property
    def var(self) -> Path:
        return self.workdir / "var"

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads((self.var / "lab.json").read_text())
        return info

    def child(self, name: str) -> dict[str, Any]:
        try:
            return dict(self.info()["children"][name])
        except (OSError, ValueError, KeyError):
            return {}

    def url(self, name: str) -> str:
        return str(self.info()["urls"][name])

    def output(self) -> str:
        return (self.workdir / "stdout.txt").read_text() + (self.workdir / "stderr.txt").read_text()

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"the lab stopped:\n{self.output()[-4000:]}"

    def status(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "latency_lab.cli.main", "status"],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def outbox(self) -> dict[str, int]:
        engine = build_engine(Settings(LAB_VAR_DIR=self.var).resolved_database_url)
        try:
            with session_factory(engine)() as session:
                return counts(session=session)
        finally:
            engine.dispose()

    def outbox_settled(self) -> bool:
        now = self.outbox()
        return now.get("pending", 0) == 0 and now.get("dispatched", 0) == 0

    def queue_empty(self) -> bool:
        """No job waits in RQ's queue (reads' analytics included)."""
        with redis.Redis.from_url(self.url("redis")) as client:
            return Queue(QUEUE_NAME, connection=client).count == 0

    def calls(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url('thirdparty')}/calls", timeout=10).json()
        return list(body["calls"])

    def admin(self, path: str, body: dict[str, Any]) -> None:
        httpx.put(f"{self.url('service')}{path}", json=body, timeout=10).raise_for_status()


@contextlib.contextmanager
def running_lab(workdir: Path, *options: str) -> Iterator[RunningLab]:
    """`latency-lab up` with its own Redis, free ports and a small seed; offload on, fast world.
    Stopped at the end with Ctrl-C, checking that it exits 0 and leaves no process behind."""
    env = lab_up_env(workdir / "var")
    with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "latency_lab.cli.main",
                "up",
                "--workers",
                "1",
                "--seed-leads",
                "50",
                *options,
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    running = RunningLab(process, env, workdir)
    try:
        up = eventually(
            lambda: process.poll() is not None or "Press Ctrl-C to stop." in running.output(),
            timeout_s=180,
        )
        assert up, running.output()
        running.assert_running()
        running.admin("/admin/world", FAST_WORLD)
        running.admin("/admin/toggles", {"async_offload": True})
        yield running
    finally:
        _stop_and_check_nothing_is_left(running)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """One lab for the module, with two RQ workers and the dashboard."""
    with running_lab(tmp_path_factory.mktemp("supervised"), "--rq-workers", "2") as running:
        yield running


def _stop_and_check_nothing_is_left(lab: RunningLab) -> None:
    if lab.process.poll() is not None:
        return
    everything = [
        psutil.Process(pid) for pid in lab.info()["processes"].values() if psutil.pid_exists(pid)
    ]
    everything += [child for p in everything for child in p.children(recursive=True)]
    lab.process.send_signal(signal.SIGINT)
    try:
        assert lab.process.wait(timeout=60) == 0, lab.output()[-4000:]
    finally:
        if lab.process.poll() is None:
            lab.process.kill()
    left = eventually(lambda: not [p for p in everything if _alive(p)], timeout_s=15)
    assert left, [p for p in everything if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- a mixed load through the edge --------------------------------------------------------------
@dataclass
class Outcome:
    at: float  # monotonic
    kind: str
    ok: bool
    detail: str = ""


@dataclass
class MixedLoad:
    """Reads (a list, one lead) and creates through the edge, from two threads."""

    edge: str
    outcomes: list[Outcome] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    creating: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    numbers: Iterator[int] = field(default_factory=itertools.count)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> MixedLoad:
        self.creating.set()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(2)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, thread: int) -> None:
        with httpx.Client(base_url=self.edge, timeout=5.0, trust_env=False) as client:
            for step in itertools.count():
                if self.stopping.is_set():
                    return
                self._one(client, thread, step)
                time.sleep(0.05)

    def _one(self, client: httpx.Client, thread: int, step: int) -> None:
        kind = ("list", "read", "create")[step % 3]
        if kind == "create" and not self.creating.is_set():
            kind = "read"
        try:
            response = self._send(client, kind, step)
            ok = response.status_code == (201 if kind == "create" else 200)
            if ok and kind == "create":
                self.created.append(int(response.json()["id"]))
            detail = "" if ok else f"{response.status_code} {response.text[:80]}"
        except httpx.HTTPError as exc:
            ok, detail = False, type(exc).__name__
        self.outcomes.append(Outcome(time.monotonic(), kind, ok, detail))

    def _send(self, client: httpx.Client, kind: str, step: int) -> httpx.Response:
        if kind == "list":
            return client.get("/api/leads", params={"limit": 20})
        if kind == "read":
            return client.get(f"/api/leads/{step % 50 + 1}")
        n = next(self.numbers)
        return client.post(
            "/api/leads",
            json={
                "company": f"Supervised {n}",
                "contact_name": "Jackie Chiles",
                "email": f"jackie{n}.{os.getpid()}@chiles.example",
                "owner_id": 2,
                "tags": ["enterprise"],
                "metadata": {"source": "event"},
            },
        )

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.at < end]


# --- killing parts ------------------------------------------------------------------------------
@dataclass
class Kill:
    name: str
    back_after_s: float
    requests: int
    failed: list[Outcome]


def kill_and_wait_until_back(lab: RunningLab, load: MixedLoad, name: str, soak_s: float) -> Kill:
    """SIGKILL the part; wait until lab.json says it is up with a new PID; keep the load on."""
    old = lab.child(name)
    assert old.get("state") == "up", (name, old)
    killed_at = time.monotonic()
    os.kill(old["pid"], signal.SIGKILL)
    back = eventually(
        lambda: (
            lab.child(name).get("pid") not in (None, old["pid"])
            and lab.child(name).get("state") == "up"
        ),
        timeout_s=30,
        interval_s=0.05,
    )
    back_at = time.monotonic()
    assert back, f"{name} not back:\n{lab.output()[-4000:]}"
    lab.assert_running()
    time.sleep(soak_s)
    window = load.between(killed_at, time.monotonic())
    failed = [o for o in window if not o.ok]
    late = [o for o in failed if o.at > back_at + 1.0]
    assert not late, f"{name}: requests failed after it was back: {late}"
    assert lab.child(name)["restarts"] == old["restarts"] + 1
    return Kill(name, back_at - killed_at, len(window), failed)


def report(kills: list[Kill]) -> None:
    print("\npart killed     back after  requests  failed  (what failed)")
    for kill in kills:
        what = sorted({f"{o.kind}: {o.detail}" for o in kill.failed})
        print(
            f"{kill.name:<15} {kill.back_after_s:>8.1f} s  {kill.requests:>8}  "
            f"{len(kill.failed):>6}  {'; '.join(what)[:150]}"
        )


def run_kill_sequence(lab: RunningLab, soak_s: float) -> None:
    load = MixedLoad(lab.url("edge")).start()
    kills: list[Kill] = []
    earlier_calls: list[dict[str, Any]] = []
    try:
        time.sleep(soak_s)
        for name in KILL_ORDER:
            if name == "thirdparty":
                # The simulator keeps its call records in memory: count what it has seen before
                # it dies (creates paused until every side effect so far is delivered).
                load.creating.clear()
                assert eventually(lab.outbox_settled, timeout_s=DRAIN_S), lab.outbox()
                earlier_calls = lab.calls()
            kills.append(kill_and_wait_until_back(lab, load, name, soak_s))
            load.creating.set()
    finally:
        load.stop()
        report(kills)
    assert all(kill.back_after_s <= BACK_WITHIN_S for kill in kills), kills
    check_nothing_lost(lab, load, earlier_calls)


def check_nothing_lost(
    lab: RunningLab,
    load: MixedLoad,
    earlier_calls: list[dict[str, Any]],
) -> None:
    leads = set(load.created)
    assert len(leads) == len(load.created) and len(leads) > 10
    settled = eventually(lab.outbox_settled, timeout_s=DRAIN_S)
    assert settled, lab.outbox()
    toggles = httpx.get(f"{lab.url('service')}/admin/toggles", timeout=10).json()["toggles"]
    assert toggles["async_offload"]  # kept across the Redis restart
    edge = lab.url("edge")
    unreadable = [
        lead
        for lead in leads
        if httpx.get(f"{edge}/api/leads/{lead}", timeout=10).status_code != 200
    ]
    assert unreadable == []
    calls = earlier_calls + lab.calls()
    assert delivered_once_each({"calls": calls}, leads)
    print(
        f"{len(leads)} leads created: each readable, each one's email, lead.created event and "
        f"enrichment delivered exactly once ({lab.outbox()})"
    )


# --- the tests ---------------------------------------------------------------------------------
def test_each_part_killed_in_turn_is_back_and_nothing_is_lost(lab: RunningLab) -> None:
    run_kill_sequence(lab, soak_s=1.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_each_part_killed_in_turn_under_a_longer_load(lab: RunningLab) -> None:
    run_kill_sequence(lab, soak_s=20.0)


def test_a_stopped_worker_is_not_responding_and_its_job_is_taken_over(lab: RunningLab) -> None:
    assert eventually(lab.queue_empty, timeout_s=DRAIN_S)  # no backlog left by the tests before
    slow = {provider: SLOW_PROVIDER for provider in ("email", "analytics", "enrichment")}
    lab.admin("/admin/world", slow)
    time.sleep(1.5)  # every process's shared-state poller sees the slow world
    created = httpx.post(
        f"{lab.url('edge')}/api/leads",
        timeout=10,
        json={
            "company": "Kruger Industrial Smoothing",
            "contact_name": "Kruger",
            "email": "kruger@kis.example",
            "owner_id": 2,
        },
        headers={"X-Lab-Toggles": "async_offload=on"},
    )
    assert created.status_code == 201
    lead = int(created.json()["id"])
    assert {s["state"] for s in created.json()["side_effects"].values()} == {"queued"}

    def busy_worker() -> tuple[str, int] | None:
        for name in ("worker-1", "worker-2"):
            pid = lab.child(name)["pid"]
            if running_jobs(lab.url("redis"), pid):
                return name, pid
        return None

    found = eventually(busy_worker, timeout_s=15)
    assert found, lab.output()[-3000:]
    name, pid = found
    restarts = lab.child(name)["restarts"]
    time.sleep(1.0)  # the job's call is with the provider (which answers after 3 s)
    os.killpg(pid, signal.SIGSTOP)  # the worker hangs, and the jobs on its threads with it
    try:
        lab.admin("/admin/world", FAST_WORLD)
        noticed = eventually(lambda: lab.child(name).get("state") == "not responding", timeout_s=15)
        assert noticed, lab.child(name)
        status = lab.status()
        print(f"\n{status.stdout}{status.stderr}")
        assert status.returncode == 3
        row = next(line for line in status.stdout.splitlines() if line.startswith(name))
        assert row.split()[1:3] == ["not", "responding"]
        stopped_at = time.monotonic()
        taken_over = eventually(lab.outbox_settled, timeout_s=DRAIN_S)
        assert taken_over, lab.outbox()
        print(f"its job was taken over and done {time.monotonic() - stopped_at:.1f} s later")
    finally:
        os.killpg(pid, signal.SIGCONT)
    assert eventually(lambda: lab.child(name).get("state") == "up", timeout_s=15)
    assert lab.child(name)["restarts"] == restarts and lab.child(name)["pid"] == pid  # not killed
    calls = lab.calls()
    assert delivered_once_each({"calls": calls}, {lead})
    again = [c for c in calls if c["outcome"] == "duplicate" and _lead_of(c) == lead]
    assert again  # the stopped job's call, made again by the worker that took it over: answered
    # from the provider's idempotency record, not delivered twice


def _lead_of(call: dict[str, Any]) -> Any:
    body = call["body"]
    return body.get("lead_id") or (body.get("properties") or {}).get("lead_id")


def test_a_part_that_dies_on_every_start_is_given_up_on_and_the_lab_goes_on(
    lab: RunningLab,
) -> None:
    dashboard = lab.child("dashboard")
    port = int(lab.env["LAB_DASHBOARD_PORT"])
    with socket.socket() as squatter:  # something else takes the dashboard's port
        os.kill(dashboard["pid"], signal.SIGKILL)
        bound = eventually(lambda: _bind(squatter, port), timeout_s=5, interval_s=0.01)
        assert bound
        given_up = eventually(
            lambda: lab.child("dashboard").get("state") == "down", timeout_s=120, interval_s=0.5
        )
        assert given_up, lab.output()[-4000:]
        lab.assert_running()
        status = lab.status()
    print(f"\n{status.stdout}{status.stderr}")
    assert status.returncode == 3 and "dashboard is down" in status.stderr
    message = lab.output().split("dashboard (pid")[-1]
    assert "it exited 5 times within 60 s, so it is not started again" in message
    assert re.search(rf"Port {port} is (not available|already in use)", message)  # its log
    assert "The lab goes on without dashboard (down)" in message
    assert httpx.get(f"{lab.url('edge')}/api/leads?limit=1", timeout=10).status_code == 200


def _bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    sock.listen()
    return True


@pytest.mark.slow
def test_an_essential_part_that_dies_on_every_start_stops_the_lab_cleanly(tmp_path: Path) -> None:
    with running_lab(tmp_path, "--rq-workers", "1", "--no-dashboard") as lab:
        everything = [psutil.Process(pid) for pid in lab.info()["processes"].values()]
        everything += [child for p in everything for child in p.children(recursive=True)]
        port = int(lab.env["LAB_EDGE_PORT"])
        with socket.socket() as squatter:  # something else takes the edge's port
            os.kill(lab.child("edge")["pid"], signal.SIGKILL)
            assert eventually(lambda: _bind(squatter, port), timeout_s=5, interval_s=0.01)
            exit_code = lab.process.wait(timeout=180)

        assert exit_code == 1
        message = lab.output().split("edge (pid")[-1]
        assert "it exited 5 times within 60 s, so it is not started again" in message
        assert "edge is essential: the lab cannot go on without it" in message
        assert f"{port}" in message.split("Last lines of")[1]  # gunicorn's words about the port
        assert "The lab stopped after an error." in lab.output()
        assert eventually(lambda: not [p for p in everything if _alive(p)], timeout_s=15)
        assert not (lab.var / "lab.json").exists()
