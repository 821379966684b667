"""The process supervisor of ``latency-lab up``: start children, restart the ones that die.

Every child runs in its own session (process group) with its output in ``<log_dir>/<name>.log``.
:meth:`Supervisor.wait_ready` holds start-up until each child answers its readiness probe; after
that :meth:`Supervisor.tend`, called in a loop, keeps the children running:

* a child that exits unexpectedly (SIGKILL, a crash, the OOM killer) is logged, what is left of
  its process group is killed (gunicorn's workers would hold its port), and it is started again
  after an exponential backoff (0.5 s, 1 s, 2 s, ... at most 8 s);
* a restarted child counts as back (state ``up``) only once its readiness probe passes again;
  one that does not pass within the ready timeout is killed and counted as another exit;
* a child that exits ``RestartPolicy.crash_limit`` times within ``crash_window_s`` is crash
  looping: it is given up on (state ``down``) with a message naming it and quoting its log. If
  it is essential (the service, the edge, the lab's Redis) ``tend`` returns that message and the
  lab stops; otherwise the lab goes on without it;
* a running child that is stopped (SIGSTOP: process state ``T``), or whose probe fails
  repeatedly, is reported ``not responding`` (and ``up`` again when it answers). It is not
  restarted: a stopped RQ worker's job is taken over as abandoned by another worker (RQ's own
  handling, :mod:`latency_lab.worker.process`).

Work horses of RQ workers leave their worker's process group (``setpgrp``); the supervisor keeps
track of descendants, lets a dead worker's horse finish its job, and kills every one still alive
when it stops, so nothing outlives the lab.

Why our own supervisor and not supervisord or circus: both restart children with a retry limit,
but neither knows when our children are *ready* (an HTTP health URL, an RQ worker registered in
Redis), which is what start-up order and "back after a restart" mean here; supervisord runs as a
daemon configured by an ini file and kills only process groups (an RQ work horse escapes it);
circus brings ZeroMQ and Tornado into a lab that would use one tenth of it, and both would put a
second control plane (their own CLI and state) beside ``latency-lab up`` and ``var/lab.json``.
What the lab needs on top of what it had (spawning, readiness, stopping trees) is a restart
policy of a few dozen lines. The backoff is one expression (``min(cap, base * 2 ** n)``) in a
loop that never sleeps per child; retry libraries (tenacity, backoff, stamina) wrap a blocking
call and do not fit a loop that watches ten processes at once.

What it builds on: :mod:`~latency_lab.lab.children` (a child's spec and its life so far),
:mod:`~latency_lab.lab.probes` (readiness) and :mod:`~latency_lab.lab.process_tree` (spawning in
a session, stopping whole trees).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from latency_lab.lab.children import ProcessSpec, ProcessState, RunningProcess, describe_exit
from latency_lab.lab.messages import LabError, describe_code, log_excerpt
from latency_lab.lab.probes import RedisProbe
from latency_lab.lab.process_tree import (
    STOP_GRACE_S,
    is_stopped,
    kill_all,
    signal_group,
    start_in_session,
    terminate_trees,
    track,
)

__all__ = [
    "POLL_INTERVAL_S",
    "STOP_GRACE_S",
    "ProcessSpec",
    "RedisProbe",  # importers from before the split (tests/reliability/test_redis_outage.py)
    "RestartPolicy",
    "Supervisor",
]

POLL_INTERVAL_S = 0.2

Say = Callable[[str], None]


@dataclass(frozen=True)
class RestartPolicy:
    """When to start a dead child again, and when to give up on it."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    crash_limit: int = 5
    crash_window_s: float = 60.0
    ready_timeout_s: float = 60.0
    settle_s: float = 1.0  # a child without a probe is up once it has run this long
    check_interval_s: float = 2.0  # how often a running child's responsiveness is checked
    unanswered_checks: int = 3  # failed probes in a row before it is "not responding"

    def delay(self, recent_exits: int) -> float:
        """Exponential backoff: the n-th exit within the window waits base * 2 ** (n - 1)."""
        return float(min(self.max_delay_s, self.initial_delay_s * 2 ** max(0, recent_exits - 1)))


class Supervisor:
    """Starts children in their own sessions, restarts those that die, stops them all."""

    def __init__(
        self,
        log_dir: Path,
        env: Mapping[str, str],
        *,
        warn: Say = lambda _m: None,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.warn = warn
        self.policy = policy or RestartPolicy()
        self.running: list[RunningProcess] = []
        self.orphans: dict[int, psutil.Process] = {}  # a dead child's work horses, finishing

    # --- starting -----------------------------------------------------------------------------
    def spawn(self, spec: ProcessSpec, *, tier: int = 0) -> RunningProcess:
        process = RunningProcess(spec, self._start(spec), self._log_path(spec), tier)
        self.running.append(process)
        return process

    def _start(self, spec: ProcessSpec, *, append: bool = False) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if spec.before_start is not None:
            spec.before_start()
        return start_in_session(spec.argv, self._log_path(spec), self.env, append=append)

    def _log_path(self, spec: ProcessSpec) -> Path:
        return self.log_dir / f"{spec.name}.log"

    def wait_ready(self, processes: Iterable[RunningProcess], timeout_s: float) -> None:
        """Return once every process's probe passes; raise :class:`LabError` naming a laggard."""
        processes = list(processes)
        pending = [p for p in processes if p.spec.probe is not None]
        deadline = time.monotonic() + timeout_s
        while pending:
            for process in pending:
                if process.exit_code() is not None:
                    raise LabError(describe_exit(process, "during start-up"))
            pending = [p for p in pending if not p.probe()]
            if pending and time.monotonic() > deadline:
                laggard = pending[0]
                raise LabError(
                    f"{laggard.spec.name} (pid {laggard.pid}) was not ready after {timeout_s:.0f} s"
                    f" (waiting for {laggard.spec.probe!r}).\n{log_excerpt(laggard.log_path)}"
                )
            if pending:
                time.sleep(POLL_INTERVAL_S)
        for process in processes:
            process.state = ProcessState.UP

    def first_exited(self) -> RunningProcess | None:
        return next((p for p in self.running if p.exit_code() is not None), None)

    # --- looking after them -------------------------------------------------------------------
    def tend(self) -> str | None:
        """One round of care for every child; the give-up message of an essential child, if any."""
        now = time.monotonic()
        failure = None
        for process in self.running:
            failure = self._tend(process, now) or failure
        return failure

    def _tend(self, process: RunningProcess, now: float) -> str | None:
        if process.state is ProcessState.DOWN:
            return None
        if process.restart_at is not None:
            if now >= process.restart_at:
                self._respawn(process, now)
            return None
        if process.exit_code() is not None:
            return self._exited(process, now, describe_code(process.exit_code()))
        if process.state in (ProcessState.STARTING, ProcessState.RESTARTING):
            return self._check_back(process, now)
        if now >= process.next_check:
            self._check_responding(process, now)
        return None

    def _exited(self, process: RunningProcess, now: float, how: str) -> str | None:
        """It died (or never got ready): back off and start it again, or give up on it."""
        process.last_exit = how
        self._bury(process)
        process.exits.append(now)
        while process.exits and process.exits[0] < now - self.policy.crash_window_s:
            process.exits.popleft()
        if process.down_since is None:
            process.down_since = now
        name = f"{process.spec.name} (pid {process.pid})"
        if len(process.exits) >= self.policy.crash_limit:
            return self._give_up(process, name, how)
        delay = self.policy.delay(len(process.exits))
        process.state, process.restart_at = ProcessState.RESTARTING, now + delay
        self.warn(
            f"{name} {how}; starting it again in {delay:.1f} s (restart {process.restarts + 1})"
        )
        return None

    def _give_up(self, process: RunningProcess, name: str, how: str) -> str | None:
        process.state = ProcessState.DOWN
        message = (
            f"{name} {how}: it exited {len(process.exits)} times within "
            f"{self.policy.crash_window_s:.0f} s, so it is not started again.\n"
            f"{log_excerpt(process.log_path)}"
        )
        if process.spec.essential:
            return f"{message}\n{process.spec.name} is essential: the lab cannot go on without it."
        self.warn(
            f"{message}\nThe lab goes on without {process.spec.name} (down): see "
            "`latency-lab status`."
        )
        return None

    def _respawn(self, process: RunningProcess, now: float) -> None:
        process.restart_at = None
        with open(process.log_path, "ab") as log:
            log.write(
                f"--- latency-lab up: restart {process.restarts + 1} of {process.spec.name}"
                f" (it {process.last_exit}) ---\n".encode()
            )
        process.popen = self._start(process.spec, append=True)
        process.restarts += 1
        process.started_at, process.started_mono = time.time(), now
        process.family.clear()

    def _check_back(self, process: RunningProcess, now: float) -> str | None:
        """A (re)started child counts as up once its probe passes (or, without one, it lasts)."""
        probe = process.spec.probe
        running_for = now - process.started_mono
        if probe(process.pid) if probe is not None else running_for >= self.policy.settle_s:
            was_down = process.state is ProcessState.RESTARTING
            process.state, process.next_check, process.unanswered = ProcessState.UP, now, 0
            if was_down and process.down_since is not None:
                self.warn(
                    f"{process.spec.name} is back (pid {process.pid}, restart "
                    f"{process.restarts}) after {now - process.down_since:.1f} s"
                )
            process.down_since = None
            return None
        if running_for > self.policy.ready_timeout_s:
            signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=5)
            return self._exited(
                process, now, f"was not ready after {self.policy.ready_timeout_s:.0f} s"
            )
        return None

    def _check_responding(self, process: RunningProcess, now: float) -> None:
        process.next_check = now + self.policy.check_interval_s
        track(process.family, [process.popen])
        if is_stopped(process.pid):
            process.unanswered = self.policy.unanswered_checks
        elif not (process.spec.probe and process.spec.probe_while_running) or process.probe():
            process.unanswered = 0
        else:
            process.unanswered += 1
        answering = process.unanswered < self.policy.unanswered_checks
        state = ProcessState.UP if answering else ProcessState.NOT_RESPONDING
        if state is not process.state:
            self.warn(f"{process.spec.name} (pid {process.pid}) is {state.value}")
            process.state = state

    def _bury(self, process: RunningProcess) -> None:
        """Kill what is left of a dead child's group; its work horses may finish their jobs."""
        signal_group(process.pid, signal.SIGKILL)
        for pid, descendant in process.family.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) != process.pid and descendant.is_running():
                    self.orphans[pid] = descendant
        process.family.clear()

    def statuses(self) -> dict[str, dict[str, Any]]:
        return {p.spec.name: p.status() for p in self.running}

    # --- stopping -----------------------------------------------------------------------------
    def stop(self, grace_s: float = STOP_GRACE_S, hurry: threading.Event | None = None) -> None:
        """Stop every child, last tier first; nothing any of them started survives."""
        for tier in sorted({p.tier for p in self.running}, reverse=True):
            group = [p for p in self.running if p.tier == tier]
            terminate_trees([p.popen for p in group], grace_s=grace_s, hurry=hurry)
        kill_all(self.orphans.values())
        self.orphans.clear()
        self.running.clear()
