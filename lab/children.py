"""The lab's children as the supervisor sees them: what to run, and one run of it so far.

A :class:`ProcessSpec` says what to start (name, command line, readiness probe, port); a
:class:`RunningProcess` is that spec started, with the current OS process, its
:class:`ProcessState`, its restarts and its last exit. :meth:`RunningProcess.status` is what
``var/lab.json`` says about it.
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from latency_lab.lab.messages import describe_code, log_excerpt
from latency_lab.lab.probes import Probe


class ProcessState(StrEnum):
    STARTING = "starting"
    UP = "up"
    RESTARTING = "restarting"
    NOT_RESPONDING = "not responding"
    DOWN = "down"


@dataclass(frozen=True)
class ProcessSpec:
    """One child process: its name (and log file name), command line and readiness check.

    ``essential``: when it crash-loops, the lab stops (the lab goes on without any other).
    ``probe_while_running``: the probe also tells whether it still answers once up (an HTTP
    health URL does; an RQ worker's registration lapses while it is busy or Redis restarts, so a
    worker is judged by its process state alone)."""

    name: str
    argv: tuple[str, ...]
    probe: Probe | None = None
    port: int | None = None
    essential: bool = False
    probe_while_running: bool = True
    before_start: Callable[[], None] | None = None  # e.g. make the working directory


@dataclass
class RunningProcess:
    """A child and its life so far: the current process, its state, its restarts and exits."""

    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    tier: int
    started_at: float = field(default_factory=time.time)
    state: ProcessState = ProcessState.STARTING
    restarts: int = 0
    last_exit: str | None = None
    exits: deque[float] = field(default_factory=deque)  # monotonic times of recent exits
    restart_at: float | None = None  # monotonic: when the next start is due
    started_mono: float = field(default_factory=time.monotonic)
    down_since: float | None = None  # monotonic: when it died, for "back after N s"
    next_check: float = 0.0
    unanswered: int = 0
    family: dict[int, psutil.Process] = field(default_factory=dict)  # descendants seen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def probe(self) -> bool:
        """Its readiness probe's answer now (only for a spec that has one)."""
        assert self.spec.probe is not None
        return self.spec.probe(self.pid)

    def status(self) -> dict[str, Any]:
        """What ``var/lab.json`` says about this child."""
        return {
            "pid": self.pid,
            "state": self.state.value,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "essential": self.spec.essential,
        }


def describe_exit(process: RunningProcess, when: str) -> str:
    how = describe_code(process.exit_code())
    return f"{process.spec.name} (pid {process.pid}) {how} {when}.\n{log_excerpt(process.log_path)}"
