"""Span processors: the SDK's batch processor, with the spans it exported and dropped counted.

Export must never sit on the request path, and a full queue must never raise in a request: the
SDK's ``BatchSpanProcessor`` does both (bounded queue, background thread, ``force_flush``,
re-initialisation after ``fork``). What it does not do is *say how many* spans it lost: a full
queue is a log line, an exporter's failure is ignored. The lab shows the count (``/healthz``, the
store's ``process_stats``, the dashboard), so :class:`CountingBatchSpanProcessor` adds exactly
that, through public API only:

* a :class:`CountingExporter` around the exporter counts what was handed over, what the exporter
  accepted (``exported``) and what it refused or raised on (``failed``);
* ``on_end`` keeps the queue's occupancy (spans accepted minus spans handed over) and, when it is
  at ``max_queue_size``, counts the span as dropped instead of passing it on. The SDK's own queue
  would drop silently (its oldest span); ours is never fuller than it, so the SDK never has to.

Why not the SDK's own accounting: the SDK (1.45) counts queue-full drops in the experimental
``otel.sdk.processor.span.processed`` metric, but only when the process-wide environment variable
``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` is set before the processor is built, only as a
metric to collect through a meter provider, and without export failures. Counting here keeps the
numbers exact and per processor, whatever the environment.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    """``OTEL_BSP_*`` settings; the lab's defaults where unset (a 500 ms delay, not the SDK's 5 s:
    the dashboard should see a request's spans within a second)."""

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


class CountingExporter(SpanExporter):
    """Passes batches to ``exporter``; counts spans handed over, exported and failed."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.lock = threading.Lock()
        self.handed = 0
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.handed += len(spans)
        try:
            result = self.exporter.export(spans)
        except Exception:  # an exporter must never take the export thread down
            log.exception("span export failed")
            result = SpanExportResult.FAILURE
        with self.lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor; ``exported``, ``failed`` and ``dropped`` say where spans went.

    ``dropped`` counts spans refused on a full queue or after shutdown, and spans whose export
    failed (``failed``).
    """

    def __init__(self, exporter: SpanExporter, settings: BatchSettings | None = None) -> None:
        settings = settings or BatchSettings.from_environment()
        self._counting = CountingExporter(exporter)
        self._max_queue_size = settings.max_queue_size
        self._accepted = 0
        self._refused = 0
        self._closed = False
        super().__init__(
            self._counting,
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay_ms,
            # The SDK refuses a batch larger than the queue; such a batch is the queue anyway.
            max_export_batch_size=min(settings.max_export_batch_size, settings.max_queue_size),
            export_timeout_millis=settings.export_timeout_ms,
        )
        forget_queue = weakref.WeakMethod(self._forget_queue)

        def forget_queue_in_child() -> None:
            if (method := forget_queue()) is not None:
                method()

        os.register_at_fork(after_in_child=forget_queue_in_child)

    @property
    def exported(self) -> int:
        return self._counting.exported

    @property
    def failed(self) -> int:
        return self._counting.failed

    @property
    def dropped(self) -> int:
        return self._refused + self._counting.failed

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        with self._counting.lock:
            queued = self._accepted - self._counting.handed
            if self._closed or queued >= self._max_queue_size:
                self._refused += 1
                return
            self._accepted += 1
            super().on_end(span)  # under the lock: a concurrent shutdown cannot drop it uncounted

    def shutdown(self) -> None:
        with self._counting.lock:
            self._closed = True
        super().shutdown()

    def _forget_queue(self) -> None:
        # A forked child starts with an empty queue (the SDK clears it): nothing is pending.
        self._counting.lock = threading.Lock()
        self._accepted = self._counting.handed


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
