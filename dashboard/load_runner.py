"""The dashboard's handle on the load generator: one run at a time, shared by every browser tab.

:class:`~latency_lab.lab.loadgen.LoadGenerator` does the work on its own threads; this holder keeps
the current run so a Streamlit rerun (a new script thread) can show its progress or stop it. The
dashboard keeps one :class:`LoadRunner` per server process (``st.cache_resource`` in
:mod:`latency_lab.dashboard.data`), so whoever opens the dashboard sees the load that is running.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from latency_lab.lab.loadgen import LoadGenerator, LoadSpec, summarize


class LoadBusy(RuntimeError):
    """A run is already going; stop it first."""


@dataclass(frozen=True)
class LoadStatus:
    """A snapshot of the current (or last) run."""

    running: bool = False
    done: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    summary: dict[str, float | int | None] = field(default_factory=dict)
    spec: LoadSpec | None = None
    stopped: bool = False
    run: int = 0  # how many runs this dashboard started; 0 before the first

    @property
    def started(self) -> bool:
        return self.spec is not None

    @property
    def progress(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


class LoadRunner:
    """Start, stop and watch one load run at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generator: LoadGenerator | None = None
        self._stopped = False
        self._runs = 0

    def start(self, spec: LoadSpec) -> LoadStatus:
        with self._lock:
            if self._generator is not None and self._generator.running:
                raise LoadBusy("a load run is already going: stop it before starting another")
            self._generator = LoadGenerator(spec).start()
            self._stopped = False
            self._runs += 1
        return self.status()

    def stop(self) -> LoadStatus:
        with self._lock:
            if self._generator is not None and self._generator.running:
                self._generator.stop()
                self._stopped = True
        return self.status()

    def wait(self, timeout_s: float) -> LoadStatus:
        """Block until the run ends or ``timeout_s`` passes (for tests and scripts)."""
        deadline = time.monotonic() + timeout_s
        while self.status().running and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.status()

    def status(self) -> LoadStatus:
        generator = self._generator
        if generator is None:
            return LoadStatus()
        report = generator.report
        samples = list(report.samples)
        elapsed = report.elapsed_s
        return LoadStatus(
            running=generator.running,
            done=len(samples),
            total=generator.spec.requests,
            elapsed_s=elapsed,
            summary=summarize(samples, elapsed) if samples else {},
            spec=generator.spec,
            stopped=self._stopped,
            run=self._runs,
        )
