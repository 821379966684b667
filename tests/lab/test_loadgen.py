"""The load generator against the real service app: mix, accounting, stopping, bad specs."""

from __future__ import annotations

import httpx
import pytest

from latency_lab.lab.loadgen import (
    Endpoint,
    LoadError,
    LoadGenerator,
    LoadSpec,
    parse_mix,
    parse_server_timing,
)
from tests.lab_fixtures import Lab


def _spec(**kwargs: object) -> LoadSpec:
    values: dict[str, object] = {
        "base_url": "http://lab",
        "max_lead_id": 120,
        "max_owner_id": 20,
        "list_offsets": (0,),
    }
    return LoadSpec(**(values | kwargs))  # type: ignore[arg-type]


def test_runs_the_requested_count_with_the_requested_mix(lab: Lab) -> None:
    spec = _spec(
        requests=40,
        concurrency=4,
        mix={Endpoint.LIST: 1, Endpoint.DETAIL: 1},
        list_limit=5,
        toggles="eager_loading=off",
    )
    report = LoadGenerator(spec, transport=httpx.WSGITransport(app=lab.app)).run()

    assert len(report.samples) == 40
    assert {s.endpoint for s in report.samples} == {Endpoint.LIST, Endpoint.DETAIL}
    assert all(s.status == 200 for s in report.samples)
    lists = [s for s in report.samples if s.endpoint is Endpoint.LIST]
    assert {s.timing.statements for s in lists} == {1 + 3 * 5}
    summary = report.summary()
    assert summary["requests"] == 40 and summary["errors"] == 0
    assert summary["p50_ms"] is not None and summary["requests_per_s"] is not None


def test_statements_per_request_drop_with_eager_loading(lab: Lab) -> None:
    def statements(toggles: str) -> object:
        spec = _spec(
            requests=10, concurrency=2, mix={Endpoint.LIST: 1}, list_limit=10, toggles=toggles
        )
        transport = httpx.WSGITransport(app=lab.app)
        return LoadGenerator(spec, transport=transport).run().summary()["statements_per_request"]

    assert statements("eager_loading=off") == 31
    assert statements("eager_loading=on") == 1


def test_cache_hit_rates_are_reported_per_layer(lab: Lab) -> None:
    spec = _spec(requests=20, concurrency=1, mix={Endpoint.STATS: 1}, toggles="app_cache=on")
    summary = LoadGenerator(spec, transport=httpx.WSGITransport(app=lab.app)).run().summary()

    assert summary["hit_rate_app"] == 0.95  # one miss, then hits
    assert summary["hit_rate_redis"] is None


def test_stop_ends_a_long_run_early(lab: Lab) -> None:
    spec = _spec(requests=100_000, concurrency=2, rate_per_s=50, mix={Endpoint.STATIC: 1})
    generator = LoadGenerator(spec, transport=httpx.WSGITransport(app=lab.app)).start()
    generator.stop()
    report = generator.wait(timeout_s=5)

    assert not generator.running
    assert len(report.samples) < 100
    assert report.finished is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("list=1,teleport=2", "unknown endpoint 'teleport'"),
        ("list=abc", "must be a number"),
        ("list", "expected endpoint=weight"),
        ("list=0", "positive weight"),
    ],
)
def test_bad_mixes_are_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        parse_mix(text)


def test_bad_specs_are_rejected() -> None:
    with pytest.raises(LoadError, match="concurrency"):
        _spec(concurrency=0)
    with pytest.raises(LoadError, match="requests"):
        _spec(requests=0)


def test_server_timing_parsing() -> None:
    timing = parse_server_timing(
        'db;dur=12.5;desc="31 statements", ext;dur=101.0;desc="1 calls", cache-redis;desc="hit"'
    )

    assert (timing.statements, timing.db_ms, timing.ext_calls, timing.ext_ms) == (
        31,
        12.5,
        1,
        101.0,
    )
    assert timing.cache == {"redis": "hit"}
