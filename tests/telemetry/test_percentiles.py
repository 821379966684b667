"""One percentile definition (nearest rank) for the store, the load generator and the bench."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from latency_lab.lab.loadgen import Endpoint, Sample, summarize
from latency_lab.telemetry.accounting import ServerTiming
from latency_lab.telemetry.percentiles import nearest_rank, nearest_ranks, rank
from latency_lab.telemetry.store import TraceStore
from tests.telemetry.factories import RecordingProvider, RequestShape, request_traces


def test_nearest_rank_is_the_ceil_p_n_th_smallest() -> None:
    values = [float(i) for i in range(1, 101)]
    assert nearest_ranks(values, (50, 95, 99)) == {50: 50.0, 95: 95.0, 99: 99.0}
    assert nearest_ranks([3.0], (50, 99)) == {50: 3.0, 99: 3.0}
    # Four values: the 2nd smallest, not the mean of the middle two (statistics.median: 2.5).
    assert nearest_rank([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert nearest_rank([5.0, 1.0, 3.0], 50) == 3.0
    assert [rank(20, p) for p in (5, 50, 95, 99, 100)] == [1, 10, 19, 20, 20]
    assert nearest_rank([], 50) is None and nearest_ranks([], (50,)) == {}


@pytest.mark.parametrize("percent", [0, -5, 101])
def test_a_percentile_outside_0_100_is_refused(percent: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank([1.0], percent)


def _sample(latency_ms: float) -> Sample:
    return Sample(Endpoint.LIST, 200, latency_ms, ServerTiming())


@pytest.mark.parametrize(
    "latencies", [[7.0, 3.0], [9.0, 1.0, 4.0, 2.0], [5.0, 1.0, 8.0, 2.0, 6.0, 3.0]]
)
def test_the_load_generator_reports_the_same_percentiles(latencies: list[float]) -> None:
    summary = summarize([_sample(x) for x in latencies], elapsed_s=1.0)
    assert (summary["p50_ms"], summary["p95_ms"], summary["p99_ms"]) == tuple(
        nearest_rank(latencies, p) for p in (50, 95, 99)
    )


@pytest.fixture
def store(store_url: str) -> Iterator[TraceStore]:
    trace_store = TraceStore(store_url).create()
    yield trace_store
    trace_store.close()


@pytest.mark.parametrize("count", [1, 2, 4, 5, 6])
def test_the_store_agrees_on_small_samples(store: TraceStore, count: int) -> None:
    """SQLite ranks in Python, PostgreSQL with percentile_disc: both the same nearest rank."""
    durations = [float(d) for d in (40, 10, 30, 20, 60, 50)[:count]]
    shapes = [RequestShape(duration_ms=d) for d in durations]
    store.write_spans(request_traces(RecordingProvider(), shapes))

    (row,) = store.aggregate_by_config()

    expected = {f"p{p}_ms": nearest_rank(durations, p) for p in (50, 95, 99)}
    assert {key: pytest.approx(row[key]) for key in expected} == expected
