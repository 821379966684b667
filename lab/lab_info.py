"""``var/lab.json``: what a running lab says about itself, for other commands and the dashboard.

``latency-lab up`` writes it once the lab is up and again whenever a process changes state
(restarted, back, not responding, given up on); stopping removes it. It holds the lab's URLs,
each process's PID (``processes``) and, per process (``children``), its state, start time,
restarts and last exit. :func:`read_lab_info` ignores a file left behind by a lab that no longer
runs; :func:`process_statuses` is what ``latency-lab status`` prints and the dashboard shows::

    info = read_lab_info(settings)
    if info is not None:
        for process in process_statuses(info):
            print(process.name, process.state, process.restarts)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from latency_lab.core.settings import Settings
from latency_lab.lab.children import ProcessState
from latency_lab.lab.process_tree import is_stopped

LAB_FILE_NAME = "lab.json"


@dataclass(frozen=True)
class LabInfo:
    """What ``var/lab.json`` says about a running lab."""

    pid: int
    started_at: float
    urls: dict[str, str]
    processes: dict[str, int]
    log_dir: str
    owns_redis: bool = False
    children: dict[str, dict[str, Any]] = field(default_factory=dict)

    def is_alive(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started_at) < 1.0
        except psutil.Error:
            return False


def lab_file(settings: Settings) -> Path:
    return settings.var_dir / LAB_FILE_NAME


def read_lab_info(settings: Settings) -> LabInfo | None:
    """The running lab's description, or None when there is none (or only a stale one)."""
    try:
        data = json.loads(lab_file(settings).read_text())
        info = LabInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
    return info if info.is_alive() else None


def write_lab_info(path: Path, info: LabInfo) -> None:
    """Replace the file at once: a reader never sees half of it."""
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(asdict(info), indent=2) + "\n")
    temporary.replace(path)


@dataclass(frozen=True)
class ProcessStatus:
    """One process of a running lab, as ``latency-lab status`` prints it."""

    name: str
    pid: int
    state: str
    uptime_s: float | None  # None while it is down
    restarts: int
    last_exit: str | None
    essential: bool

    @property
    def uptime(self) -> str:
        return format_duration(self.uptime_s) if self.uptime_s is not None else "-"


def process_statuses(info: LabInfo, now: float | None = None) -> list[ProcessStatus]:
    """Every process of the lab, in start-up order, with what the lab last recorded about it.

    A process recorded as up that is stopped right now (SIGSTOP) is reported not responding
    without waiting for the lab's next check."""
    now = time.time() if now is None else now
    statuses = []
    for name, pid in info.processes.items():
        child = info.children.get(name, {})
        state = str(child.get("state", ProcessState.UP))
        if state == ProcessState.UP and is_stopped(pid):
            state = ProcessState.NOT_RESPONDING.value
        started = child.get("started_at")
        uptime = None
        if started is not None and state != ProcessState.DOWN:
            uptime = now - float(started)
        statuses.append(
            ProcessStatus(
                name,
                pid,
                state,
                uptime,
                int(child.get("restarts", 0)),
                child.get("last_exit"),
                bool(child.get("essential")),
            )
        )
    return statuses


def format_duration(seconds: float) -> str:
    """``42s``, ``5m 03s``, ``2h 07m``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
