"""Profiles in the trace store: kept apart from the span that carried them, bounded like it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store import TraceStore
from tests.telemetry.factories import RecordingProvider

DOCUMENT = '{"profiles": [{"events": []}], "shared": {"frames": []}}'


@pytest.fixture
def store(store_url: str) -> Iterator[TraceStore]:
    trace_store = TraceStore(store_url).create()
    yield trace_store
    trace_store.close()


def _profiled_trace(recording: RecordingProvider, start_ns: int) -> str:
    tracer = recording.tracer
    with tracer.start_as_current_span("GET /api/leads", kind=SpanKind.SERVER,
                                      start_time=start_ns) as server:  # fmt: skip
        server.set_attribute(v.PROFILE, DOCUMENT)
        server.set_attribute(v.PROFILED, True)
        with tracer.start_as_current_span("SELECT leads"):
            pass
    return format(server.get_span_context().trace_id, "032x")


def test_a_profile_is_stored_with_its_trace_and_not_inside_its_span(store: TraceStore) -> None:
    recording = RecordingProvider()
    profiled = _profiled_trace(recording, time.time_ns())
    store.write_spans(recording.take())

    (row,) = store.trace_profiles(profiled)
    server = next(s for s in store.trace_spans(profiled) if s["kind"] == "SERVER")

    assert (row["document"], row["span_id"], row["name"]) == (
        DOCUMENT,
        server["span_id"],
        "GET /api/leads",
    )
    assert server["attributes"][v.PROFILED] is True and v.PROFILE not in server["attributes"]
    assert store.trace_profiles("0" * 32) == []


def test_retention_trims_profiles_with_their_spans(store: TraceStore) -> None:
    recording = RecordingProvider()
    old = _profiled_trace(recording, time.time_ns() - 3_600 * 10**9)
    new = _profiled_trace(recording, time.time_ns())
    store.write_spans(recording.take())

    store.apply_retention(max_age_s=600, max_spans=None)

    assert store.trace_profiles(old) == [] and len(store.trace_profiles(new)) == 1
