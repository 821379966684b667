"""Span processors: a bounded batch processor that counts what it drops.

Export must never sit on the request path, and a full queue must never raise in a request. The
SDK's ``BatchSpanProcessor`` already drops when its queue is full, but only says so in a log line;
the lab has to *show* the count (``/healthz``, the dashboard), so this processor keeps the same
contract (bounded queue, background thread, ``OTEL_BSP_*`` settings) and counts every drop.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    """``OTEL_BSP_*`` settings, with the SDK's defaults."""

    max_queue_size: int = 2048
    schedule_delay_ms: float = 500.0
    max_export_batch_size: int = 512
    export_timeout_ms: float = 30_000.0

    @classmethod
    def from_environment(cls) -> BatchSettings:
        return cls(
            max_queue_size=_env_int("OTEL_BSP_MAX_QUEUE_SIZE", cls.max_queue_size),
            schedule_delay_ms=_env_int("OTEL_BSP_SCHEDULE_DELAY", int(cls.schedule_delay_ms)),
            max_export_batch_size=_env_int(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", cls.max_export_batch_size
            ),
            export_timeout_ms=_env_int("OTEL_BSP_EXPORT_TIMEOUT", int(cls.export_timeout_ms)),
        )


class CountingBatchSpanProcessor(SpanProcessor):
    """Batches finished spans to an exporter on a daemon thread; counts spans it had to drop."""

    def __init__(self, exporter: SpanExporter, settings: BatchSettings | None = None) -> None:
        self._exporter = exporter
        self._settings = settings or BatchSettings.from_environment()
        self._queue: deque[ReadableSpan] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flushed = threading.Condition(self._lock)
        self._in_flight = 0
        self._shutdown = False
        self.dropped = 0
        self.exported = 0
        self.failed = 0
        self._start_worker()
        os.register_at_fork(after_in_child=self._at_fork_reinit)

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._run, name="lab-span-export", daemon=True)
        self._worker.start()

    def _at_fork_reinit(self) -> None:
        # A forked child (gunicorn worker, RQ work horse) has no export thread: start its own.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flushed = threading.Condition(self._lock)
        self._queue.clear()
        self._in_flight = 0
        self._start_worker()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        with self._lock:
            if self._shutdown or len(self._queue) >= self._settings.max_queue_size:
                self.dropped += 1
                return
            self._queue.append(span)
            if len(self._queue) >= self._settings.max_export_batch_size:
                self._wake.notify()

    def _run(self) -> None:
        delay_s = self._settings.schedule_delay_ms / 1000
        while True:
            with self._lock:
                if not self._queue and not self._shutdown:
                    self._wake.wait(delay_s)
                batch = self._take_batch()
                if not batch and self._shutdown:
                    return
            if batch:
                self._export(batch)

    def _take_batch(self) -> list[ReadableSpan]:
        size = min(len(self._queue), self._settings.max_export_batch_size)
        batch = [self._queue.popleft() for _ in range(size)]
        self._in_flight += len(batch)
        return batch

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self._exporter.export(batch)
            ok = getattr(result, "name", "SUCCESS") == "SUCCESS"
        except Exception:  # an exporter must never take the export thread down
            log.exception("span export failed")
            ok = False
        with self._lock:
            self._in_flight -= len(batch)
            if ok:
                self.exported += len(batch)
            else:
                self.failed += len(batch)
                self.dropped += len(batch)
            self._flushed.notify_all()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline_s = timeout_millis / 1000
        with self._lock:
            self._wake.notify()
            return self._flushed.wait_for(
                lambda: not self._queue and self._in_flight == 0, timeout=deadline_s
            )

    def shutdown(self) -> None:
        self.force_flush(int(self._settings.export_timeout_ms))
        with self._lock:
            self._shutdown = True
            self._wake.notify()
        self._worker.join(timeout=self._settings.export_timeout_ms / 1000)
        self._exporter.shutdown()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s=%r is not an integer; using %s", name, raw, default)
        return default
    return value if value > 0 else default
