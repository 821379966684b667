"""async_offload: inline calls on the request path vs RQ jobs run by a real worker process."""

from __future__ import annotations

import subprocess

import pytest

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store import TraceStore
from tests.lab_fixtures import (
    NEW_LEAD,
    Lab,
    ThirdParty,
    eventually,
    make_lab,
)

PROVIDERS = (v.Provider.EMAIL, v.Provider.ANALYTICS, v.Provider.ENRICHMENT)


def test_inline_create_makes_every_third_party_call_before_answering(
    lab: Lab, thirdparty: ThirdParty
) -> None:
    response = lab.client.post(
        "/api/leads", json=NEW_LEAD, headers={"X-Lab-Toggles": "async_offload=off"}
    )

    assert response.status_code == 201
    assert {k: s["state"] for k, s in response.json["side_effects"].items()} == {
        "send_owner_email": "delivered",
        "track_event": "delivered",
        "enrich_lead": "delivered",
    }
    assert all(thirdparty.delivered(p) == 1 for p in PROVIDERS)
    assert "ext;" in response.headers["Server-Timing"]
    assert 'desc="3 calls"' in response.headers["Server-Timing"]
    assert response.json["industry"] is not None  # enrichment written back inline


def test_inline_read_tracks_analytics_on_the_request_path(lab: Lab, thirdparty: ThirdParty) -> None:
    response = lab.get("/api/leads?limit=5", toggles="async_offload=off")

    assert 'desc="1 calls"' in response.headers["Server-Timing"]
    assert thirdparty.delivered(v.Provider.ANALYTICS) == 1


@pytest.fixture
def offload_lab(database_url: str, lab_redis: str, thirdparty: ThirdParty, tmp_path):
    lab = make_lab(
        database_url,
        lab_redis,
        thirdparty.url,
        tmp_path,
        LAB_TRACE_STORE_URL=f"sqlite:///{tmp_path / 'traces.db'}",
    )
    yield lab
    lab.close()


def test_offloaded_create_makes_no_call_and_a_real_worker_delivers(
    offload_lab: Lab,
    thirdparty: ThirdParty,
    worker_process: subprocess.Popen[bytes],
    tmp_path: object,
) -> None:
    response = offload_lab.client.post(
        "/api/leads", json=NEW_LEAD, headers={"X-Lab-Toggles": "async_offload=on"}
    )

    assert response.status_code == 201
    assert {s["state"] for s in response.json["side_effects"].values()} == {"queued"}
    assert 'ext;dur=0.0;desc="0 calls"' in response.headers["Server-Timing"]
    assert 'queue;desc="3 jobs"' in response.headers["Server-Timing"]
    delivered = eventually(
        lambda: all(thirdparty.delivered(p) == 1 for p in PROVIDERS), timeout_s=20
    )
    assert delivered, f"worker did not deliver: {thirdparty.calls()['counts']}"
    lead_id = response.json["id"]
    enriched = eventually(
        lambda: offload_lab.get(f"/api/leads/{lead_id}").json["industry"] is not None
    )
    assert enriched, "the worker's enrichment was not written back to the lead"


def test_offloaded_read_enqueues_instead_of_calling(
    offload_lab: Lab, thirdparty: ThirdParty
) -> None:
    response = offload_lab.get("/api/leads?limit=5", toggles="async_offload=on")

    assert 'desc="0 calls"' in response.headers["Server-Timing"]
    assert 'queue;desc="1 jobs"' in response.headers["Server-Timing"]
    assert thirdparty.delivered(v.Provider.ANALYTICS) == 0  # no worker running: still queued


def test_job_spans_join_the_request_trace(
    database_url: str,
    lab_redis: str,
    thirdparty: ThirdParty,
    tmp_path,
    worker_process: subprocess.Popen[bytes],
    lab_process_env: dict[str, str],
) -> None:
    store_url = lab_process_env["LAB_TRACE_STORE_URL"]
    lab = make_lab(database_url, lab_redis, thirdparty.url, tmp_path)
    response = lab.client.post(
        "/api/leads", json=NEW_LEAD, headers={"X-Lab-Toggles": "async_offload=on"}
    )
    trace_id = response.headers["traceresponse"].split("-")[1]
    lab.close()
    store = TraceStore(store_url).create()

    def job_spans() -> list[dict[str, object]]:
        spans = [s for s in store.trace_spans(trace_id) if s["name"] == v.SPAN_JOB]
        return spans if len(spans) == 3 else []

    spans = eventually(job_spans, timeout_s=20)
    assert spans, "the worker's job spans did not arrive in the request's trace"
    enqueues = {
        s.context.span_id for s in lab.spans.get_finished_spans() if s.name == v.SPAN_ENQUEUE
    }
    assert {int(str(s["parent_span_id"]), 16) for s in spans} == enqueues
    third_party = [
        s for s in store.trace_spans(trace_id) if str(s["name"]).startswith(v.SPAN_THIRD_PARTY)
    ]
    assert len(third_party) == 3
    store.close()
