"""`latency-lab up`: start-up order, readiness errors, and stopping with no process left behind.

The supervisor tests use small stand-in processes (fast, and able to misbehave on purpose); the
last tests run the real lab as a user would, as a subprocess with its own Redis.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
from click.testing import CliRunner

from latency_lab.cli.main import cli
from latency_lab.core.settings import Settings
from latency_lab.lab import programs, runtime
from latency_lab.lab.redis_server import free_port
from latency_lab.lab.runtime import (
    HttpProbe,
    Lab,
    LabError,
    LabOptions,
    ProcessSpec,
    Supervisor,
    check_ports_free,
    child_environment,
    lab_tiers,
    read_lab_info,
    redact_url,
)
from latency_lab.lab.supervisor import RestartPolicy
from tests.lab_fixtures import lab_up_env, process_env

REPO_ROOT = Path(__file__).resolve().parents[2]
SLEEP = "import time\nwhile True: time.sleep(1)"
# Quick to give up, so that crash loops take seconds: 3 exits within a minute.
FAST_RESTARTS = RestartPolicy(
    initial_delay_s=0.1, max_delay_s=0.4, crash_limit=3, ready_timeout_s=20, check_interval_s=0.5
)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", textwrap.dedent(code))


def processes(pids: Iterable[int], *, with_descendants: bool = False) -> list[psutil.Process]:
    """Handles on these processes (and their descendants): safe from PID reuse, unlike PIDs."""
    found = [psutil.Process(pid) for pid in pids]
    if with_descendants:
        found += [child for process in found for child in process.children(recursive=True)]
    return found


def gone(tracked: list[psutil.Process]) -> bool:
    """True when none of these processes runs any more (a zombie awaiting its reaper is gone)."""
    for process in tracked:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def wait_for(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _no_lab_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here see only what each test gives them."""
    for name in list(os.environ):
        if name.startswith("LAB_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


def make_settings(**values: Any) -> Settings:
    """Settings from these values (by environment name) and the defaults."""
    return Settings(**values)


# --- what runs, in which order ------------------------------------------------------------------
def test_tiers_start_dependencies_first_with_the_configured_sizes(tmp_path: Path) -> None:
    settings = make_settings(
        LAB_VAR_DIR=tmp_path,
        LAB_SERVICE_WORKERS=3,
        LAB_RQ_WORKERS=2,
        LAB_EDGE_PORT=9100,
        LAB_SERVICE_PORT=9101,
        LAB_THIRDPARTY_PORT=9102,
    )
    tiers = lab_tiers(settings, LabOptions(dashboard=False), "redis://127.0.0.1:1/0")

    assert [[spec.name for spec in tier] for tier in tiers] == [
        ["thirdparty"],
        ["service", "worker-1", "worker-2", "outbox-relay"],
        ["edge"],
    ]
    service = tiers[1][0]
    assert "latency_lab.service.app:create_app()" in service.argv
    assert service.argv[service.argv.index("-w") + 1] == "3"
    assert service.argv[service.argv.index("-b") + 1] == "127.0.0.1:9101"
    assert repr(tiers[2][0].probe) == "http://127.0.0.1:9100/edge/healthz"
    assert repr(tiers[0][0].probe) == "http://127.0.0.1:9102/healthz"


def test_dashboard_starts_only_when_its_app_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "dashboard" / "app.py"
    monkeypatch.setattr(programs, "dashboard_script", lambda: script)
    settings = make_settings(LAB_VAR_DIR=tmp_path, LAB_DASHBOARD_PORT=9200)

    assert "dashboard" not in [s.name for s in lab_tiers(settings, LabOptions(), "")[-1]]
    script.parent.mkdir()
    script.write_text("")
    dashboard = lab_tiers(settings, LabOptions(), "")[-1][-1]
    assert dashboard.name == "dashboard"
    assert str(script) in dashboard.argv and "9200" in dashboard.argv
    assert "dashboard" not in [
        s.name for s in lab_tiers(settings, LabOptions(dashboard=False), "")[-1]
    ]


def test_children_learn_where_everything_is(tmp_path: Path) -> None:
    settings = make_settings(LAB_VAR_DIR=tmp_path, LAB_SERVICE_PORT=9301, LAB_THIRDPARTY_PORT=9302)
    env = child_environment(settings, "redis://127.0.0.1:6390/0", base={"PATH": "/bin"})

    assert env["PATH"] == "/bin"
    assert env["REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert env["LAB_VAR_DIR"] == str(tmp_path)
    assert env["LAB_SERVICE_URL"] == "http://127.0.0.1:9301"
    assert env["LAB_THIRDPARTY_URL"] == "http://127.0.0.1:9302"
    assert env["LAB_SERVICE_PORT"] == "9301"
    assert (env["LAB_RQ_WORKERS"], env["LAB_RQ_CONCURRENCY"]) == ("1", "16")  # one worker process


def test_a_taken_port_is_refused_naming_the_setting_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = ProcessSpec("edge", ("true",), port=port)
        with pytest.raises(LabError, match=rf"port {port} .* edge, is in use.*LAB_EDGE_PORT"):
            check_ports_free("127.0.0.1", [spec])
    with pytest.raises(LabError, match="LAB_EDGE_PORT and LAB_SERVICE_PORT are both 9400"):
        check_ports_free(
            "127.0.0.1",
            [
                ProcessSpec("service", ("true",), port=9400),
                ProcessSpec("edge", ("true",), port=9400),
            ],
        )


def test_passwords_are_not_printed() -> None:
    assert redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("postgresql://lab:pw@db/lab") == "postgresql://lab:***@db/lab"
    assert redact_url("sqlite:////tmp/lab.db") == "sqlite:////tmp/lab.db"


# --- the supervisor with stand-in processes ------------------------------------------------------
@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path / "log", process_env())
    yield sup
    sup.stop(grace_s=1)


def test_a_child_dying_during_start_up_is_named_with_its_log(supervisor: Supervisor) -> None:
    spec = ProcessSpec(
        "thirdparty",
        python("import sys\nprint('cannot bind 8002')\nsys.exit(3)"),
        probe=lambda pid: False,
    )
    process = supervisor.spawn(spec)

    with pytest.raises(LabError) as error:
        supervisor.wait_ready([process], timeout_s=20)
    message = str(error.value)
    assert f"thirdparty (pid {process.pid}) exited (3) during start-up" in message
    assert "cannot bind 8002" in message and "thirdparty.log" in message


def test_a_child_never_ready_is_named_after_the_timeout(supervisor: Supervisor) -> None:
    spec = ProcessSpec(
        "edge",
        python(f"print('booting')\n{SLEEP}"),
        probe=HttpProbe(f"http://127.0.0.1:{free_port()}/edge/healthz"),
    )
    process = supervisor.spawn(spec)

    with pytest.raises(LabError, match=r"edge \(pid \d+\) was not ready after 1 s.*/edge/healthz"):
        supervisor.wait_ready([process], timeout_s=1)


def test_the_dashboard_command_line_serves_streamlit(
    supervisor: Supervisor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "dashboard" / "app.py"
    script.parent.mkdir()
    script.write_text("import streamlit as st\nst.title('stand-in dashboard')\n")
    monkeypatch.setattr(programs, "dashboard_script", lambda: script)
    settings = make_settings(LAB_VAR_DIR=tmp_path, LAB_DASHBOARD_PORT=free_port())
    dashboard = lab_tiers(settings, LabOptions(), "")[-1][-1]

    supervisor.wait_ready([supervisor.spawn(dashboard)], timeout_s=60)

    assert httpx.get(settings.dashboard_url, timeout=10).status_code == 200


def test_stop_leaves_no_descendant_behind(supervisor: Supervisor, tmp_path: Path) -> None:
    # A stubborn parent (ignores SIGTERM) with a child in its group and a "work horse" that, like
    # RQ's, moved to a process group of its own: none of them may outlive stop().
    family = python(f"""
        import signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sleeper = [sys.executable, "-c", {SLEEP!r}]
        same_group = subprocess.Popen(sleeper)
        horse = subprocess.Popen(sleeper, process_group=0)
        print(same_group.pid, horse.pid, flush=True)
        while True:
            signal.pause()
    """)
    process = supervisor.spawn(ProcessSpec("worker-1", family))
    log = process.log_path
    wait_for(lambda: log.read_text().strip(), 10, "the stand-in to report its children")
    family_processes = processes({process.pid, *map(int, log.read_text().split())})
    assert not gone(family_processes)

    started = time.monotonic()
    supervisor.stop(grace_s=1)

    assert gone(family_processes)
    assert time.monotonic() - started < 8
    assert supervisor.running == []


# --- the Lab's life, with stand-in processes -----------------------------------------------------
@dataclass
class StandInLab:
    """Builds Labs on the session's Redis whose processes are an HTTP server plus one script."""

    settings: Settings
    port: int
    second: str = SLEEP
    name: str = "service"
    warnings: list[str] = field(default_factory=list)

    def tiers(self, settings: Settings, options: LabOptions, redis: str) -> list[list[ProcessSpec]]:
        web = ProcessSpec(
            "thirdparty",
            (sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"),
            probe=HttpProbe(f"http://127.0.0.1:{self.port}/"),
            port=self.port,
        )
        return [[web], [ProcessSpec(self.name, python(self.second))]]

    def build(self, second: str, name: str = "service") -> Lab:
        self.second, self.name = second, name
        return Lab(
            self.settings,
            LabOptions(stop_grace_s=2, restart=FAST_RESTARTS),
            say=lambda message: None,
            warn=self.warnings.append,
        )

    def lab_json(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads((self.settings.var_dir / "lab.json").read_text())
        except (OSError, ValueError):
            return {}
        return info

    def child(self, name: str) -> dict[str, Any]:
        children: dict[str, Any] = self.lab_json().get("children", {})
        return dict(children.get(name, {}))


@pytest.fixture
def stand_in(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> StandInLab:
    stand_in = StandInLab(
        make_settings(LAB_VAR_DIR=tmp_path / "var", REDIS_URL=redis_url), free_port()
    )
    monkeypatch.setattr(runtime, "lab_tiers", stand_in.tiers)
    monkeypatch.setattr(Lab, "_seed", lambda self: None)
    return stand_in


def test_sigterm_stops_the_lab_and_exits_0(stand_in: StandInLab) -> None:
    lab = stand_in.build(SLEEP)
    lab_json = lab.settings.var_dir / "lab.json"
    seen: dict[str, psutil.Process] = {}

    def terminate_when_up() -> None:
        wait_for(lab_json.exists, 30, "lab.json")
        started = json.loads(lab_json.read_text())["processes"]
        seen.update({name: psutil.Process(pid) for name, pid in started.items()})
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_up, daemon=True).start()
    assert lab.run() == 0

    assert set(seen) == {"thirdparty", "service"}
    assert gone(list(seen.values()))
    assert not lab_json.exists()


def in_background(action: Callable[[], None]) -> list[BaseException]:
    """Run ``action`` in a thread while the lab runs in this one; what it raised, to check."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:  # reported by the test, in the test's thread
            errors.append(error)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=run, daemon=True).start()
    return errors


def test_a_child_that_dies_is_started_again_and_its_restart_recorded(stand_in: StandInLab) -> None:
    lab = stand_in.build(SLEEP, name="worker-1")
    seen: dict[str, Any] = {}

    def kill_and_watch_it_come_back() -> None:
        wait_for(lambda: stand_in.child("worker-1").get("state") == "up", 30, "worker-1 up")
        first = stand_in.child("worker-1")["pid"]
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: (
                stand_in.child("worker-1").get("restarts") == 1
                and stand_in.child("worker-1")["state"] == "up"
            ),
            10,
            "worker-1 back",
        )
        seen.update(
            first=first,
            child=stand_in.child("worker-1"),
            processes=stand_in.lab_json()["processes"],
        )

    errors = in_background(kill_and_watch_it_come_back)
    assert lab.run() == 0
    assert not errors, errors

    assert seen["child"]["pid"] != seen["first"]
    assert seen["child"]["last_exit"] == "was killed by SIGKILL"
    assert seen["processes"]["worker-1"] == seen["child"]["pid"]
    assert any(
        f"worker-1 (pid {seen['first']}) was killed by SIGKILL; starting it again" in w
        for w in stand_in.warnings
    )
    assert any(w.startswith("worker-1 is back") for w in stand_in.warnings)


def test_an_essential_child_that_keeps_dying_is_given_up_on_and_the_lab_stops(
    stand_in: StandInLab,
) -> None:
    lab = stand_in.build("import sys, time\ntime.sleep(1)\nprint('out of memory')\nsys.exit(9)")

    assert lab.run() == 1

    failure = "\n".join(stand_in.warnings)
    assert failure.count("exited (9); starting it again") == 2  # then the third exit: given up
    assert "exited (9): it exited 3 times within 60 s, so it is not started again" in failure
    assert "out of memory" in failure and "service.log" in failure
    assert "service is essential: the lab cannot go on without it" in failure
    assert not (lab.settings.var_dir / "lab.json").exists()
    assert lab.supervisor is not None and lab.supervisor.running == []


def test_a_child_that_keeps_dying_on_start_is_reported_down_and_the_lab_goes_on(
    stand_in: StandInLab,
) -> None:
    lab = stand_in.build(
        "import sys\nprint('cannot reach the database')\nsys.exit(2)", name="outbox-relay"
    )
    seen: dict[str, Any] = {}

    def wait_until_given_up() -> None:
        wait_for(lambda: stand_in.child("outbox-relay").get("state") == "down", 30, "given up")
        time.sleep(1)  # the lab goes on
        seen.update(
            relay=stand_in.child("outbox-relay"),
            web=httpx.get(f"http://127.0.0.1:{stand_in.port}/").status_code,
        )

    errors = in_background(wait_until_given_up)
    assert lab.run() == 0  # stopped by the SIGTERM, not by the relay
    assert not errors, errors

    assert seen["web"] == 200
    assert seen["relay"]["restarts"] == 2 and seen["relay"]["last_exit"] == "exited (2)"
    given_up = next(w for w in stand_in.warnings if "not started again" in w)
    assert given_up.startswith("outbox-relay (pid")
    assert "cannot reach the database" in given_up
    assert "The lab goes on without outbox-relay (down)" in given_up


def test_a_stopped_child_is_reported_not_responding(stand_in: StandInLab) -> None:
    lab = stand_in.build(SLEEP, name="worker-1")
    seen: dict[str, Any] = {}

    def stop_it() -> None:
        wait_for(lambda: stand_in.child("worker-1").get("state") == "up", 30, "worker-1 up")
        pid = stand_in.child("worker-1")["pid"]
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: stand_in.child("worker-1")["state"] == "not responding", 10, "noticed")
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: stand_in.child("worker-1")["state"] == "up", 10, "up again")
        seen.update(restarts=stand_in.child("worker-1")["restarts"])

    errors = in_background(stop_it)
    assert lab.run() == 0
    assert not errors, errors
    assert seen["restarts"] == 0  # reported, not restarted
    assert any("worker-1 (pid" in w and "is not responding" in w for w in stand_in.warnings)


# --- latency-lab status ------------------------------------------------------------------------
def test_status_without_a_lab_says_how_to_start_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status"], env={"LAB_VAR_DIR": str(tmp_path)})

    assert result.exit_code == 1
    assert f"no lab is running from {tmp_path}" in result.output
    assert "latency-lab up" in result.output


def test_status_prints_each_process_its_restarts_and_what_is_down(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(python(SLEEP))
    try:
        now = time.time()
        children = {
            "service": {
                "pid": sleeper.pid,
                "state": "up",
                "started_at": now - 125,
                "restarts": 2,
                "last_exit": "was killed by SIGKILL",
                "essential": True,
            },
            "worker-1": {
                "pid": 999_999,
                "state": "down",
                "started_at": now - 50,
                "restarts": 4,
                "last_exit": "exited (1)",
                "essential": False,
            },
        }
        write_lab_json(tmp_path, children)
        os.kill(sleeper.pid, signal.SIGSTOP)
        settings = make_settings(LAB_VAR_DIR=tmp_path)
        assert read_lab_info(settings) is not None
        result = CliRunner().invoke(cli, ["status"], env={"LAB_VAR_DIR": str(tmp_path)})
    finally:
        sleeper.kill()
        sleeper.wait()

    assert result.exit_code == 3, result.output
    table = result.output.split("\n* essential")[0].splitlines()[3:]  # after the headings
    rows = {line.split()[0]: line for line in table}
    assert rows["service"].split()[1:5] == ["*", "not", "responding", str(sleeper.pid)]
    assert "2m 05s" in rows["service"] and "was killed by SIGKILL" in rows["service"]
    assert rows["worker-1"].split()[1:3] == ["down", "999999"]
    assert "exited (1)" in rows["worker-1"]
    assert "worker-1 is down: see" in result.output


def write_lab_json(var: Path, children: dict[str, dict[str, Any]]) -> None:
    """A lab.json as the lab writes it, naming this test process as the lab (so it is live)."""
    me = psutil.Process()
    var.mkdir(parents=True, exist_ok=True)
    (var / "lab.json").write_text(
        json.dumps(
            {
                "pid": me.pid,
                "started_at": me.create_time(),
                "urls": {"edge": "http://127.0.0.1:1"},
                "processes": {name: child["pid"] for name, child in children.items()},
                "log_dir": str(var / "log"),
                "owns_redis": True,
                "children": children,
            }
        )
    )


# --- the real thing ------------------------------------------------------------------------------
def test_exposed_host_without_token_refuses_to_start(tmp_path: Path) -> None:
    env = process_env(LAB_VAR_DIR=str(tmp_path / "var"), LAB_HOST="0.0.0.0")
    done = subprocess.run(
        [sys.executable, "-m", "latency_lab.cli.main", "up", "--no-dashboard"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "LAB_HOST=0.0.0.0" in done.stderr and "set LAB_ADMIN_TOKEN" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "var").exists()


@pytest.fixture
def lab_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    """`latency-lab up` with its own Redis, a small seed and free ports, as a user runs it."""
    var = tmp_path / "var"
    env = lab_up_env(var)
    with open(tmp_path / "stdout.txt", "wb") as out, open(tmp_path / "stderr.txt", "wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "latency_lab.cli.main",
                "up",
                "--no-dashboard",
                "--workers",
                "1",
                "--rq-workers",
                "1",
                "--seed-leads",
                "50",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        yield process, env, tmp_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_until_up(process: subprocess.Popen[bytes], tmp_path: Path) -> dict[str, Any]:
    stdout = tmp_path / "stdout.txt"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"`latency-lab up` exited ({process.returncode}):\n{stdout.read_text()}\n"
                f"{(tmp_path / 'stderr.txt').read_text()}"
            )
        return "Press Ctrl-C to stop." in stdout.read_text()

    wait_for(up, 150, "the lab to print its URLs")
    info: dict[str, Any] = json.loads((tmp_path / "var" / "lab.json").read_text())
    return info


def test_up_serves_every_url_and_ctrl_c_stops_every_process(
    lab_process: tuple[subprocess.Popen[bytes], dict[str, str], Path],
) -> None:
    process, env, tmp_path = lab_process
    info = _wait_until_up(process, tmp_path)
    urls: dict[str, str] = info["urls"]
    started: dict[str, int] = info["processes"]

    printed = (tmp_path / "stdout.txt").read_text()
    for name in ("edge", "service", "thirdparty", "redis", "trace_store"):
        assert urls[name] in printed
    assert info["pid"] == process.pid
    assert set(started) == {"thirdparty", "service", "worker-1", "outbox-relay", "edge", "redis"}

    for url in (
        f"{urls['edge']}/edge/healthz",
        f"{urls['edge']}/",
        f"{urls['service']}/healthz",
        f"{urls['thirdparty']}/healthz",
    ):
        assert httpx.get(url, timeout=10).status_code == 200, url
    leads = httpx.get(f"{urls['edge']}/api/leads?limit=5", timeout=30)
    assert leads.status_code == 200
    assert leads.json()["total"] == 50  # --seed-leads 50
    with redis.Redis.from_url(urls["redis"]) as client:
        assert client.ping()

    toggled = subprocess.run(
        [sys.executable, "-m", "latency_lab.cli.main", "toggles", "eager_loading=on"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert toggled.returncode == 0, toggled.stderr
    assert "eager_loading  on" in toggled.stdout
    assert httpx.get(f"{urls['service']}/admin/toggles").json()["toggles"]["eager_loading"]

    everything = processes({process.pid, *started.values()}, with_descendants=True)
    gunicorn_masters = [started[name] for name in ("thirdparty", "service", "edge")]
    assert all(psutil.Process(pid).children() for pid in gunicorn_masters)  # workers included

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    wait_for(lambda: gone(everything), 15, "every process of the lab to end")
    assert not (tmp_path / "var" / "lab.json").exists()
    assert "The lab has stopped." in (tmp_path / "stdout.txt").read_text()
