"""Process trees: start a child in a session of its own, and stop it with all it started.

Every child of the lab runs in its own session (process group), with its output in a log file,
so that one signal to the group reaches gunicorn's workers or Streamlit's threads too. RQ's work
horses leave their worker's group (``setpgrp``): stopping therefore tracks descendants by PID as
well, and kills every one still alive once the grace period is over::

    popen = start_in_session(argv, log_path, env)
    terminate_trees([popen], grace_s=10.0)  # SIGTERM, wait, SIGKILL what is left
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil

STOP_GRACE_S = 10.0


def start_in_session(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str], *, append: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session, its output (both streams) in ``log_path``."""
    with open(log_path, "ab" if append else "wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def terminate_trees(
    popens: list[subprocess.Popen[bytes]], *, grace_s: float, hurry: threading.Event | None = None
) -> None:
    """SIGTERM each session leader's group, wait up to ``grace_s``, then SIGKILL what is left.

    Descendants are tracked throughout, so a process that moved to another group (an RQ work
    horse) is killed too if it outlives its parent's warm shutdown. Stopped processes are sent
    SIGCONT, so that they can act on the SIGTERM.
    """
    tracked: dict[int, psutil.Process] = {}
    track(tracked, popens)
    for popen in popens:
        signal_group(popen.pid, signal.SIGTERM)
        signal_group(popen.pid, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and not (hurry and hurry.is_set()):
        track(tracked, popens)
        if not alive(tracked.values()):
            break
        time.sleep(0.1)
    for popen in popens:
        signal_group(popen.pid, signal.SIGKILL)
    kill_all(tracked.values())
    for popen in popens:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
    psutil.wait_procs(alive(tracked.values()), timeout=5)


def kill_all(processes: Iterable[psutil.Process]) -> None:
    """SIGKILL each of these processes that still runs."""
    for process in alive(processes):
        with contextlib.suppress(psutil.Error):
            process.kill()


def track(tracked: dict[int, psutil.Process], popens: Iterable[subprocess.Popen[bytes]]) -> None:
    """Add these session leaders and every descendant they have now to ``tracked`` (by PID)."""
    for popen in popens:
        try:
            root = psutil.Process(popen.pid)
        except psutil.NoSuchProcess:
            continue
        for process in [root, *descendants(popen.pid)]:
            tracked.setdefault(process.pid, process)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of these processes that still run (a zombie awaiting its reaper does not)."""
    running = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
    return running


def signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def is_stopped(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP, a debugger): it cannot answer anything."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False
