"""Span-linked profiles against the real service and worker processes, and `latency-lab profile`.

A request sent with ``X-Lab-Profile: on`` runs under the sampling profiler; its profile reaches
the trace store with its trace (the server span says ``lab.profiled``), and so does the profile
of each job it enqueued. ``latency-lab profile`` reads them back and writes speedscope files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from click.testing import CliRunner

from latency_lab.cli.commands import cli
from latency_lab.core.toggles import PROFILE_HEADER, TOGGLE_HEADER, Toggles
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.profiles import CodeGroup, Profile
from latency_lab.telemetry.store import TraceStore
from tests.lab_fixtures import ServiceProcess, eventually, trace_id_of

SCHEMA_FILE = Path(__file__).parents[1] / "telemetry" / "speedscope" / "file-format-schema.json"
ALL_OFF = Toggles()
EAGER_OFFLOAD = Toggles(eager_loading=True, async_offload=True)
L1_HIT = Toggles(eager_loading=True, async_offload=False, redis_cache=True, app_cache=True)
LIST = "/api/leads?limit=20"


@pytest.fixture
def store(service_process: ServiceProcess) -> TraceStore:
    return TraceStore(service_process.trace_store_url).create()


def _get(url: str, toggles: Toggles, *, profile: str | None = "on") -> httpx.Response:
    headers = {TOGGLE_HEADER: toggles.label()}
    if profile is not None:
        headers[PROFILE_HEADER] = profile
    return httpx.get(url + LIST, headers=headers, timeout=30)


def _profiles(store: TraceStore, trace_id: str, count: int = 1) -> list[dict[str, Any]]:
    found = eventually(lambda: len(store.trace_profiles(trace_id)) >= count, timeout_s=20)
    assert found, f"no profile for {trace_id}"
    return store.trace_profiles(trace_id)


def _frames(profile: Profile) -> set[str]:
    return {f"{frame.get('file', '')}:{frame['name']}" for frame in
            profile.document["shared"]["frames"]}  # fmt: skip


def test_a_profiled_lazy_listing_shows_the_orms_lazy_loads_and_the_serializer(
    service_process: ServiceProcess, store: TraceStore
) -> None:
    response = _get(service_process.url, ALL_OFF)
    trace_id = trace_id_of(response)

    (row,) = _profiles(store, trace_id)
    profile = Profile.loads(row["document"])
    frames = _frames(profile)

    assert response.status_code == 200 and row["name"].startswith("GET")
    assert any("sqlalchemy/orm/strategies.py:" in f and "lazy" in f.lower() for f in frames)
    assert any(f.endswith("lead_loader.py:lead_json") for f in frames)
    assert profile.by_group()[CodeGroup.ORM] > 0
    server = next(s for s in store.trace_spans(trace_id) if s["kind"] == "SERVER")
    assert server["span_id"] == row["span_id"]
    assert server["attributes"][v.PROFILED] is True
    assert v.PROFILE not in server["attributes"]  # kept apart, not in the span


def test_a_profiled_cache_hit_runs_no_orm(
    service_process: ServiceProcess, store: TraceStore
) -> None:
    _get(service_process.url, L1_HIT, profile=None)  # warms L1
    response = _get(service_process.url, L1_HIT)
    assert 'cache-redis;desc="hit"' in response.headers["Server-Timing"]

    (row,) = _profiles(store, trace_id_of(response))
    profile = Profile.loads(row["document"])

    assert not any("sqlalchemy/orm/" in f for f in _frames(profile))
    assert profile.by_group()[CodeGroup.ORM] == 0


@pytest.mark.usefixtures("worker_process")
def test_a_profiled_requests_jobs_are_profiled_under_their_job_span(
    service_process: ServiceProcess, store: TraceStore
) -> None:
    response = _get(service_process.url, EAGER_OFFLOAD)

    rows = _profiles(store, trace_id_of(response), count=2)
    spans = {s["span_id"]: s for s in store.trace_spans(trace_id_of(response))}

    assert [spans[row["span_id"]]["name"] for row in rows] == ["GET /api/leads", v.SPAN_JOB]
    job = Profile.loads(rows[1]["document"])
    assert any(frame.endswith("tasks.py:track_event") for frame in _frames(job))


def test_unprofiled_requests_store_no_profile(
    service_process: ServiceProcess, store: TraceStore
) -> None:
    plain = _get(service_process.url, ALL_OFF, profile=None)
    off = _get(service_process.url, ALL_OFF, profile="off")
    profiled = _get(service_process.url, ALL_OFF)

    _profiles(store, trace_id_of(profiled))  # by then the other two are in the store as well
    eventually(lambda: store.trace_spans(trace_id_of(off)), timeout_s=10)
    assert store.trace_profiles(trace_id_of(plain)) == []
    assert store.trace_profiles(trace_id_of(off)) == []


@pytest.mark.parametrize("value", ["yes please", "1", ""])
def test_a_malformed_profile_header_is_a_400_naming_it(
    service_process: ServiceProcess, value: str
) -> None:
    response = _get(service_process.url, ALL_OFF, profile=value)

    assert response.status_code == 400
    assert response.json()["header"] == PROFILE_HEADER
    assert "on or off" in response.json()["error"]


# --- latency-lab profile -------------------------------------------------------------------------
@pytest.fixture
def cli_env(
    service_process: ServiceProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("LAB_TRACE_STORE_URL", service_process.trace_store_url)
    monkeypatch.setenv("LAB_VAR_DIR", str(tmp_path / "cli-var"))
    return tmp_path / "cli-var" / "profiles"


def test_profile_a_fresh_request_and_take_it_away_as_speedscope(
    service_process: ServiceProcess, cli_env: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        ["profile", "--url", f"{service_process.url}{LIST}", "--toggles", "eager_loading=off"],
    )

    assert result.exit_code == 0, result.output
    assert "self ms" in result.output and "SQLAlchemy" in result.output
    (written,) = cli_env.glob("*.speedscope.json")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(json.loads(written.read_text()), schema)


def test_profile_by_trace_id_reads_the_store(
    service_process: ServiceProcess, store: TraceStore, cli_env: Path
) -> None:
    trace_id = trace_id_of(_get(service_process.url, ALL_OFF))
    _profiles(store, trace_id)

    result = CliRunner().invoke(cli, ["profile", trace_id, "--top", "5"])

    assert result.exit_code == 0, result.output
    assert "lead_json" in result.output or "SQLAlchemy" in result.output
    assert len(list(cli_env.glob(f"{trace_id}-*.speedscope.json"))) == 1


def test_profile_says_clearly_what_is_wrong(
    service_process: ServiceProcess, store: TraceStore, cli_env: Path
) -> None:
    unprofiled = trace_id_of(_get(service_process.url, ALL_OFF, profile=None))
    eventually(lambda: store.trace_spans(unprofiled), timeout_s=10)
    runner = CliRunner()

    not_an_id = runner.invoke(cli, ["profile", "nonsense"])
    unknown = runner.invoke(cli, ["profile", "0" * 32])
    no_profile = runner.invoke(cli, ["profile", unprofiled])
    neither = runner.invoke(cli, ["profile"])

    assert not_an_id.exit_code == 2 and "is not a trace id" in not_an_id.output
    assert unknown.exit_code == 1 and "no trace 000" in unknown.output
    assert no_profile.exit_code == 1 and "was not profiled" in no_profile.output
    assert neither.exit_code == 2 and "give a TRACE_ID" in neither.output
    for result in (not_an_id, unknown, no_profile, neither):
        assert "Traceback" not in result.output


# --- who decides what is profiled --------------------------------------------------------------
@pytest.mark.usefixtures("worker_process")
def test_a_callers_own_baggage_does_not_profile_its_jobs(
    service_process: ServiceProcess, store: TraceStore
) -> None:
    """``lab.profile`` in a caller's W3C baggage is the service's to decide, not the caller's."""
    response = httpx.get(
        service_process.url + LIST,
        headers={TOGGLE_HEADER: EAGER_OFFLOAD.label(), "baggage": f"{v.PROFILE}=on"},
        timeout=30,
    )
    trace_id = trace_id_of(response)

    eventually(lambda: v.SPAN_JOB in {s["name"] for s in store.trace_spans(trace_id)}, timeout_s=20)
    assert store.trace_profiles(trace_id) == []


def test_sampling_counts_api_requests_only(lab_factory: Any) -> None:
    """``LAB_PROFILE_EVERY=2``: health checks and admin calls take no sample."""
    lab = lab_factory(LAB_PROFILE_EVERY=2)
    for _ in range(3):
        lab.client.get("/healthz")
        lab.client.get("/admin/toggles")
    ids = [trace_id_of(lab.get(LIST, ALL_OFF.label())) for _ in range(4)]

    profiled = [bool(lab.server_span(t).attributes.get(v.PROFILED)) for t in ids]

    assert profiled == [False, True, False, True]


def test_profile_url_must_be_a_path_or_a_url(cli_env: Path) -> None:
    result = CliRunner().invoke(cli, ["profile", "--url", "api/leads"])

    assert result.exit_code == 2 and "give a path starting with /" in result.output
