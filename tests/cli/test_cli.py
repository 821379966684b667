"""The ``latency-lab`` command line as a user meets it: help, mistakes, and the admin calls.

The admin commands are exercised against a small stand-in admin API (a real HTTP server) that
records what it receives; the real service is covered by the end-to-end test of ``up``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner, Result
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from latency_lab.cli.main import cli
from latency_lab.core.toggles import Toggles
from latency_lab.core.world import World
from latency_lab.lab.redis_server import free_port


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A runner whose settings come only from the test (and a private LAB_VAR_DIR)."""
    for name in list(os.environ):
        if name.startswith("LAB_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("LAB_VAR_DIR", str(tmp_path / "var"))
    return CliRunner()


def assert_clean_failure(result: Result, exit_code: int, *expected: str) -> None:
    """Failed with this code, said what was wrong, and showed no traceback."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output


# --- help -----------------------------------------------------------------------------------------
def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    assert result.exit_code == 0
    assert set(cli.commands) == {
        "up",
        "status",
        "seed",
        "toggles",
        "world",
        "load",
        "bench",
        "outbox",
        "profile",
    }
    for command in cli.commands:
        assert command in result.output


@pytest.mark.parametrize(
    ("command", "example"),
    [
        ("up", "latency-lab up --no-dashboard --workers 1 --rq-workers 1"),
        ("seed", "latency-lab seed --leads 20000 --seed 7 --reset"),
        ("toggles", "latency-lab toggles eager_loading=on redis_cache=on async_offload=on"),
        ("world", "latency-lab world db_round_trip_ms=0.5 analytics.latency_ms=50"),
        ("outbox", "latency-lab outbox --failed"),
        ("profile", "latency-lab profile --url '/api/leads?limit=100' --toggles"),
    ],
)
def test_each_command_explains_itself_with_examples(command: str, example: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])

    assert result.exit_code == 0
    assert "Examples:" in result.output and example in result.output


def test_without_the_lab_stack_the_command_says_what_to_install() -> None:
    # The plugin-only install (`pip install latency-lab`) has no click: run the console script's
    # main() with click made unimportable, as it would be there.
    script = (
        "import sys; sys.modules['click'] = None; from latency_lab.cli.main import main; main()"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, "toggles"], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "latency-lab: the lab is not installed here (no module 'click'); "
        "install it with: pip install 'latency-lab[lab]'"
    ]


def test_importing_the_console_script_imports_nothing_heavy() -> None:
    script = (
        "import sys; import latency_lab.cli.main; "
        "print(sorted({'click', 'httpx', 'pydantic', 'sqlalchemy'} & set(sys.modules)))"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- mistakes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["eager=on"], "unknown toggle(s) eager; known: eager_loading, redis_cache"),
        (["eager_loading=maybe"], "value must be on or off, got 'maybe'"),
        (["eager_loading"], "expected NAME=on|off, got 'eager_loading'"),
        (["eager_loading=on,=off"], "expected NAME=on|off"),
    ],
)
def test_bad_toggle_arguments_exit_2_before_calling_the_lab(
    runner: CliRunner, arguments: list[str], message: str
) -> None:
    # The URL answers nothing: reaching it would fail with exit code 1, not 2.
    result = runner.invoke(cli, ["toggles", "--url", f"http://127.0.0.1:{free_port()}", *arguments])

    assert_clean_failure(result, 2, message)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["db_round_trip_ms=fast"], "db_round_trip_ms: expected a number, got 'fast'"),
        (["db_round_trip_ms=-1"], "db_round_trip_ms: Input should be greater than or equal to 0"),
        (
            ["analytics.failure_rate=2"],
            "analytics.failure_rate: Input should be less than or equal",
        ),
        (
            ["latency=5"],
            "unknown world setting 'latency'; known: db_round_trip_ms, email.latency_ms",
        ),
        (["db_round_trip_ms"], "expected KEY=VALUE, got 'db_round_trip_ms'"),
    ],
)
def test_bad_world_arguments_exit_2(runner: CliRunner, arguments: list[str], message: str) -> None:
    result = runner.invoke(cli, ["world", "--url", f"http://127.0.0.1:{free_port()}", *arguments])

    assert_clean_failure(result, 2, message)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"LAB_EDGE_PORT": "99999"},
            "LAB_EDGE_PORT=99999: Input should be less than or equal to 65535",
        ),
        (
            {"LAB_HOST": "0.0.0.0"},
            "LAB_HOST=0.0.0.0 exposes the lab beyond this machine: set LAB_ADMIN_TOKEN",
        ),
        (
            {"LAB_LOADER_STRATEGY": "lazy"},
            "LAB_LOADER_STRATEGY=lazy: must be joined, selectin, rows or json",
        ),
    ],
)
@pytest.mark.parametrize("command", [["up", "--no-dashboard"], ["toggles"], ["seed"]])
def test_invalid_settings_are_one_clear_line_and_exit_2(
    runner: CliRunner, tmp_path: Path, environment: dict[str, str], message: str, command: list[str]
) -> None:
    result = runner.invoke(cli, command, env=environment)

    assert_clean_failure(result, 2, f"Error: invalid settings: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "var" / "lab.json").exists()


def test_unknown_options_are_usage_errors(runner: CliRunner) -> None:
    assert_clean_failure(runner.invoke(cli, ["up", "--workers", "0"]), 2, "--workers")
    assert_clean_failure(runner.invoke(cli, ["launch"]), 2, "No such command 'launch'")
    assert_clean_failure(
        runner.invoke(cli, ["load", "--mix", "list=1,teleport=2"]), 2, "unknown endpoint 'teleport'"
    )
    assert_clean_failure(runner.invoke(cli, ["load", "--concurrency", "0"]), 2, "--concurrency")


def test_load_without_a_lab_says_so(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = runner.invoke(cli, ["load", "--url", url, "--requests", "5"])

    assert_clean_failure(result, 1, f"every request to {url} failed")


def test_no_lab_running_is_said_plainly(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = runner.invoke(cli, ["toggles", "--url", url])

    assert_clean_failure(result, 1, f"no lab answers at {url}", "latency-lab up")


# --- the admin calls, against a stand-in admin API ---------------------------------------------
@dataclass
class AdminStandIn:
    """A tiny admin API with the lab's shapes; remembers each request's body and headers."""

    url: str
    token: str | None = None
    requests: list[tuple[str, str, Any, dict[str, str]]] = field(default_factory=list)
    toggles: Toggles = field(default_factory=Toggles)
    world: World = field(default_factory=lambda: World.model_validate({}))


def _admin_app(stand_in: AdminStandIn) -> Flask:
    app = Flask(__name__)

    @app.before_request
    def _remember() -> Any:
        stand_in.requests.append(
            (request.method, request.path, request.get_json(silent=True), dict(request.headers))
        )
        if stand_in.token and request.headers.get("X-Lab-Admin-Token") != stand_in.token:
            return jsonify(error="the admin API needs the admin token"), 401
        return None

    @app.route("/admin/toggles", methods=["GET", "PUT"])
    def toggles() -> Any:
        if request.method == "PUT":
            stand_in.toggles = Toggles.from_json(request.get_json(), base=stand_in.toggles)
        return jsonify(toggles=stand_in.toggles.model_dump(), label=stand_in.toggles.label())

    @app.route("/admin/world", methods=["GET", "PUT"])
    def world() -> Any:
        if request.method == "PUT":
            stand_in.world = World.from_json(request.get_json(), base=stand_in.world)
        return jsonify(stand_in.world.model_dump())

    return app


@pytest.fixture
def admin() -> Iterator[AdminStandIn]:
    port = free_port()
    stand_in = AdminStandIn(f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, _admin_app(stand_in), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stand_in
    server.shutdown()
    thread.join(timeout=5)


def test_toggles_without_arguments_shows_the_table(runner: CliRunner, admin: AdminStandIn) -> None:
    result = runner.invoke(cli, ["toggles", "--url", admin.url])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == ["toggle", "state"]
    assert "eager_loading  off" in result.output and "async_offload  off" in result.output
    assert [(method, path) for method, path, *_ in admin.requests] == [("GET", "/admin/toggles")]


def test_toggles_sends_only_the_changes_and_prints_the_result(
    runner: CliRunner, admin: AdminStandIn
) -> None:
    result = runner.invoke(
        cli, ["toggles", "--url", admin.url, "eager_loading=on", "redis_cache=true,edge_cache=off"]
    )

    assert result.exit_code == 0, result.output
    method, path, body, _ = admin.requests[-1]
    assert (method, path) == ("PUT", "/admin/toggles")
    assert body == {"eager_loading": True, "redis_cache": True, "edge_cache": False}
    assert "eager_loading  on" in result.output and "redis_cache    on" in result.output
    assert "app_cache      off" in result.output


def test_world_sends_nested_changes_and_prints_every_setting(
    runner: CliRunner, admin: AdminStandIn
) -> None:
    result = runner.invoke(
        cli, ["world", "--url", admin.url, "db_round_trip_ms=2", "analytics.latency_ms=50"]
    )

    assert result.exit_code == 0, result.output
    assert admin.requests[-1][2] == {"db_round_trip_ms": 2.0, "analytics": {"latency_ms": 50.0}}
    rows = dict(line.split() for line in result.output.splitlines()[2:])
    assert rows["db_round_trip_ms"] == "2" and rows["analytics.latency_ms"] == "50"
    assert rows["email.latency_ms"] == "80"  # unchanged settings are shown too


def test_json_output_is_the_labs_answer(runner: CliRunner, admin: AdminStandIn) -> None:
    result = runner.invoke(cli, ["toggles", "--url", admin.url, "--json"])

    assert json.loads(result.output)["toggles"]["eager_loading"] is False


def test_the_admin_token_is_sent_and_a_refusal_explained(
    runner: CliRunner, admin: AdminStandIn
) -> None:
    admin.token = "s3cret"

    toggles = ["toggles", "--url", admin.url]
    accepted = runner.invoke(cli, toggles, env={"LAB_ADMIN_TOKEN": "s3cret"})
    refused = runner.invoke(cli, toggles, env={"LAB_ADMIN_TOKEN": "nope"})

    assert accepted.exit_code == 0, accepted.output
    assert admin.requests[0][3]["X-Lab-Admin-Token"] == "s3cret"
    assert_clean_failure(refused, 1, "refused the admin request (401)", "LAB_ADMIN_TOKEN")


def test_the_running_lab_is_found_through_lab_json(
    runner: CliRunner, admin: AdminStandIn, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "lab.json").write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "started_at": psutil.Process().create_time(),
                "urls": {"service": admin.url},
                "processes": {},
                "log_dir": str(var / "log"),
            }
        )
    )

    result = runner.invoke(cli, ["toggles", "eager_loading=on"])

    assert result.exit_code == 0, result.output
    assert admin.toggles.eager_loading


# --- seed ---------------------------------------------------------------------------------------
def test_seed_is_idempotent_and_refuses_to_overwrite_without_reset(
    runner: CliRunner, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'seeded.db'}"
    seed = ["seed", "--database-url", url, "--users", "5", "--tags", "5", "--no-progress"]

    first = runner.invoke(cli, [*seed, "--leads", "20"])
    again = runner.invoke(cli, [*seed, "--leads", "20"])
    other = runner.invoke(cli, [*seed, "--leads", "30"])
    reset = runner.invoke(cli, [*seed, "--leads", "30", "--reset"])

    assert first.exit_code == 0, first.output
    assert f"seeded: 20 leads, 5 users, 5 tags in {url}" in first.output
    assert "already seeded, nothing to do: 20 leads" in again.output
    assert_clean_failure(other, 1, "latency-lab seed --reset")
    assert reset.exit_code == 0 and "seeded: 30 leads" in reset.output


def test_seed_defaults_to_the_database_in_the_var_dir(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["seed", "--leads", "3", "--users", "2", "--tags", "2", "--no-progress"]
    )

    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "lab.db").is_file()


def test_seed_with_an_unusable_database_url_says_so(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["seed", "--database-url", "nosuchdb://x/y", "--no-progress"])

    assert_clean_failure(result, 2, "--database-url", "nosuchdb")
