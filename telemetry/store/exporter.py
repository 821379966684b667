"""The span exporter that writes to the trace store, behind a batch span processor.

It follows the SDK's ``SpanExporter`` contract: ``export`` reports failure instead of raising,
a lock serialises exports, and every export after ``shutdown`` fails. It is safe across a fork
(gunicorn workers, RQ's work horse): the child opens its own connections.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from sqlalchemy.exc import OperationalError

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store.trace_store import WRITE_ATTEMPTS, TraceStore

log = logging.getLogger(__name__)

StatsSource = Callable[[], tuple[int, int]]
"""Returns ``(exported, dropped)`` for this process, e.g. from the batch processor's counters."""


class TraceStoreExporter(SpanExporter):
    """Writes span batches to a :class:`TraceStore`; put it behind a batch span processor.

    The store (and its engine) is created lazily, in the process that exports: an exporter built
    before a fork (gunicorn master, RQ worker) opens its own connections in the child. Every
    export also upserts this process's counters into ``process_stats`` (from the source given to
    :meth:`set_stats_source`, else its own count of exported spans). It trims the store on its
    first export, then whenever it has written ``trim_fraction`` of ``retention_max_spans`` since
    its last trim, and at least every ``trim_interval_s`` (for the age limit): so the store holds
    at most the cap plus that fraction per writing process. ``export`` never raises.
    """

    def __init__(
        self,
        url: str,
        *,
        retention_max_age_s: float | None = 24 * 3600,
        retention_max_spans: int | None = 2_000_000,
        trim_fraction: float = 0.05,
        trim_interval_s: float = 600.0,
        stats: StatsSource | None = None,
    ) -> None:
        self.url = url
        self.retention_max_age_s = retention_max_age_s
        self.retention_max_spans = retention_max_spans
        self.trim_after_spans = (
            max(1, int(retention_max_spans * trim_fraction)) if retention_max_spans else None
        )
        self.trim_interval_s = trim_interval_s
        self._spans_since_trim = 0
        self._last_trim: float | None = None
        self._stats = stats
        self._lock = threading.Lock()
        self._store: TraceStore | None = None
        self._pid = os.getpid()
        self._exports = 0
        self._exported_spans = 0
        self._shutdown = False
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def set_stats_source(self, stats: StatsSource | None) -> None:
        """Where ``process_stats`` gets ``(exported, dropped)``, e.g. the batch processor."""
        self._stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._shutdown:
                return SpanExportResult.FAILURE
            if not spans:
                return SpanExportResult.SUCCESS
            try:
                store = self._store_for_this_process()
                self._write(store, spans)
            except Exception:  # the contract: report failure, never raise into the processor
                log.warning(
                    "could not write %d spans to the trace store", len(spans), exc_info=True
                )
                return SpanExportResult.FAILURE
            self._exports += 1
            self._exported_spans += len(spans)
            self._spans_since_trim += len(spans)
            self._after_export(store, spans[0])
            return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing is buffered here: every export is written before it returns

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown = True
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the parent's export thread may have held it at fork time

    def _store_for_this_process(self) -> TraceStore:
        pid = os.getpid()
        if self._store is not None and self._pid != pid:
            # Inherited from the parent: leave its connections to it, open our own.
            self._store.engine.dispose(close=False)
            self._store, self._exports, self._last_trim = None, 0, None
        if self._store is None:
            self._store = TraceStore(self.url).create()
            self._pid = pid
        return self._store

    @staticmethod
    def _write(store: TraceStore, spans: Sequence[ReadableSpan]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                store.write_spans(spans)
                return
            except OperationalError:  # locked past the busy timeout, or a dropped connection
                if attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(0.1 * attempt)

    def _after_export(self, store: TraceStore, sample: ReadableSpan) -> None:
        """Bookkeeping that must not turn a written batch into a failed export."""
        try:
            exported, dropped = self._stats() if self._stats else (self._exported_spans, 0)
            resource = sample.resource.attributes
            store.record_process_stats(
                service=str(resource.get("service.name", "unknown")),
                role=str(resource.get(v.PROCESS_ROLE, "")),
                host=str(resource.get("host.name") or socket.gethostname()),
                exported=exported,
                dropped=dropped,
            )
            if self._trim_due():
                self._last_trim, self._spans_since_trim = time.monotonic(), 0
                store.apply_retention(
                    max_age_s=self.retention_max_age_s, max_spans=self.retention_max_spans
                )
        except Exception:
            log.warning("trace store bookkeeping failed", exc_info=True)

    def _trim_due(self) -> bool:
        if self._last_trim is None:
            return True
        if self.trim_after_spans is not None and self._spans_since_trim >= self.trim_after_spans:
            return True
        return time.monotonic() - self._last_trim >= self.trim_interval_s
