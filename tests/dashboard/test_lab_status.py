"""The sidebar's lab status: each process of the running lab, its state and restarts, and a clear
message for one that is down or not responding (read from ``var/lab.json``, as ``latency-lab up``
writes it; tests/reliability/test_supervisor.py checks that file against a real lab)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import FakeLab

OpenPage = Callable[[str], AppTest]


def write_lab_json(var: Path, children: dict[str, dict[str, Any]]) -> None:
    """A lab.json naming this test process as the lab, so that it counts as running."""
    me = psutil.Process()
    (var / "lab.json").write_text(
        json.dumps(
            {
                "pid": me.pid,
                "started_at": me.create_time(),
                "urls": {},
                "processes": {name: child["pid"] for name, child in children.items()},
                "log_dir": str(var / "log"),
                "owns_redis": True,
                "children": children,
            }
        )
    )


def child(state: str, restarts: int = 0, last_exit: str | None = None) -> dict[str, Any]:
    return {
        "pid": 999_999,
        "state": state,
        "started_at": time.time() - 60,
        "restarts": restarts,
        "last_exit": last_exit,
        "essential": False,
    }


def sidebar_text(app: AppTest) -> str:
    return "\n".join(
        str(e.value) for e in [*app.sidebar.error, *app.sidebar.warning, *app.sidebar.caption]
    )


def test_each_process_is_listed_with_its_state_and_restarts(
    lab_env: FakeLab, open_page: OpenPage, tmp_path: Path
) -> None:
    write_lab_json(
        tmp_path,
        {
            "service": child("up", 2, "was killed by SIGKILL"),
            "worker-1": child("not responding"),
            "dashboard": child("down", 4, "exited (1)"),
        },
    )

    app = open_page("live")

    table = app.sidebar.dataframe[0].value
    assert list(table["process"]) == ["service", "worker-1", "dashboard"]
    assert list(table["state"]) == ["up", "not responding", "down"]
    assert list(table["restarts"]) == [2, 0, 4]
    shown = sidebar_text(app)
    assert "**dashboard is down**" in shown and "last: it exited (1)" in shown
    assert "**worker-1 is not responding**" in shown
    assert "service is" not in shown


def test_without_a_running_lab_the_status_says_so(lab_env: FakeLab, open_page: OpenPage) -> None:
    app = open_page("live")

    assert "no `latency-lab up` runs from this LAB_VAR_DIR" in sidebar_text(app)
    assert not app.sidebar.dataframe
