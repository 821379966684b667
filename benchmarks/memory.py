"""The lab's memory, as the kernel counts it: resident (RSS) and proportional (PSS) sizes.

RSS counts every page a process maps, so pages that forked processes share (a gunicorn master
and its workers, an RQ worker and its work horse) are counted once per process: summed over the
lab it overstates what the lab costs the machine. PSS divides each shared page among the
processes that share it, so the sum is what the lab really holds. The bench reports both.

Usage::

    sample = lab_memory(pids)                 # now: rss_mb, pss_mb, per process
    with MemoryWatch(pids) as watch:          # the peak while load runs
        ...
    watch.peak.pss_mb
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

MB = 2**20


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    name: str  # what it runs: "gunicorn service", "worker", "redis-server", ...
    rss_mb: float
    pss_mb: float


@dataclass(frozen=True)
class MemorySample:
    """The lab's processes at one moment."""

    processes: list[ProcessMemory] = field(default_factory=list)

    @property
    def rss_mb(self) -> float:
        return round(sum(p.rss_mb for p in self.processes), 1)

    @property
    def pss_mb(self) -> float:
        return round(sum(p.pss_mb for p in self.processes), 1)

    def by_name(self) -> dict[str, dict[str, float]]:
        """RSS and PSS summed per kind of process, and how many of each."""
        groups: dict[str, dict[str, float]] = {}
        for process in self.processes:
            group = groups.setdefault(process.name, {"count": 0, "rss_mb": 0.0, "pss_mb": 0.0})
            group["count"] += 1
            group["rss_mb"] = round(group["rss_mb"] + process.rss_mb, 1)
            group["pss_mb"] = round(group["pss_mb"] + process.pss_mb, 1)
        return dict(sorted(groups.items(), key=lambda item: -item[1]["pss_mb"]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "rss_mb": self.rss_mb,
            "pss_mb": self.pss_mb,
            "processes": len(self.processes),
            "by_process": self.by_name(),
        }


def lab_processes(pids: Iterable[int]) -> list[psutil.Process]:
    """The given processes and all their descendants, once each."""
    processes: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            processes[pid] = parent
            processes.update({child.pid: child for child in parent.children(recursive=True)})
        except psutil.Error:
            continue
    return list(processes.values())


def lab_memory(pids: Iterable[int]) -> MemorySample:
    measured = []
    for process in lab_processes(pids):
        try:
            full = process.memory_full_info()  # PSS from /proc/PID/smaps_rollup
            name = describe(process.cmdline())
        except psutil.Error:  # ended meanwhile, or not ours to read
            continue
        pss = getattr(full, "pss", full.rss)  # PSS is Linux-only; elsewhere RSS stands in
        measured.append(
            ProcessMemory(process.pid, name, round(full.rss / MB, 1), round(pss / MB, 1))
        )
    return MemorySample(measured)


def describe(cmdline: list[str]) -> str:
    """A short name for a lab process from its command line."""
    text = " ".join(cmdline)
    for needle, name in (
        ("service.app", "service (gunicorn)"),
        ("edge.app", "edge (gunicorn)"),
        ("simulator.app", "simulator (gunicorn)"),
        ("worker.process", "rq worker"),
        ("worker.relay", "outbox relay"),
        ("streamlit", "dashboard"),
        ("redis-server", "redis"),
        ("rq:", "rq worker"),
    ):
        if needle in text:
            return name
    return cmdline[0].rsplit("/", 1)[-1] if cmdline else "?"


class MemoryWatch:
    """Samples the lab's memory in the background; ``peak`` is the sample with the highest PSS."""

    def __init__(self, pids: list[int], interval_s: float = 0.5) -> None:
        self._pids = pids
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak = MemorySample()
        self.peak_rss_mb = 0.0
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            sample = lab_memory(self._pids)
            if sample.pss_mb > self.peak.pss_mb:
                self.peak = sample
            self.peak_rss_mb = max(self.peak_rss_mb, sample.rss_mb)
