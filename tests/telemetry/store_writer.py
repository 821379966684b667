"""A process that records request traces into a trace store, as a lab process would.

``python -m tests.telemetry.store_writer URL SPANS NAME`` ends ``SPANS`` spans (traces of ten:
one SERVER span and nine statements) through the lab's counting batch processor and prints
``{"exported": n, "dropped": m}``.
"""

from __future__ import annotations

import json
import sys
import time

from latency_lab.telemetry.processors import BatchSettings, CountingBatchSpanProcessor
from latency_lab.telemetry.store import TraceStoreExporter
from tests.telemetry.factories import RecordingProvider, RequestShape, request_trace

SPANS_PER_TRACE = 10


def main(url: str, spans: int, name: str) -> None:
    recording = RecordingProvider(service=name, role="writer")
    exporter = TraceStoreExporter(url)
    processor = CountingBatchSpanProcessor(
        exporter,
        BatchSettings(max_queue_size=spans, schedule_delay_ms=20, max_export_batch_size=200),
    )
    exporter.set_stats_source(lambda: (processor.exported, processor.dropped))
    recording.provider.add_span_processor(processor)
    shape = RequestShape(statements=SPANS_PER_TRACE - 1, config=name)
    for _ in range(spans // SPANS_PER_TRACE):
        request_trace(recording.tracer, time.time_ns(), shape)
    recording.provider.shutdown()
    print(json.dumps({"exported": processor.exported, "dropped": processor.dropped}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
