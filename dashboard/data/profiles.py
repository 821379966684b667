"""A trace's profiles (the request's and its jobs', :mod:`latency_lab.telemetry.profiles`), and
profiling the next request of a kind: the same GET, in a chosen configuration, with
``X-Lab-Profile: on``."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from latency_lab.dashboard.data.admin import admin_errors
from latency_lab.dashboard.data.connections import LIVE_TTL_S, admin_client, reading_store
from latency_lab.dashboard.data.summaries import SERVICE_ROLE
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.profiles import Profile

TOP_FUNCTIONS = 15


@dataclass(frozen=True)
class ProfileView:
    """One profiled span of a trace, shaped for the explorer."""

    span_id: str
    service: str
    name: str
    duration_ms: float
    by_group: pd.DataFrame  # group, self_ms, share
    top: pd.DataFrame  # function, where, group, self_ms, share
    icicle: pd.DataFrame  # id, parent, label, total_ms, group
    document: str  # the speedscope file, for download


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def trace_profiles(trace_id: str) -> list[ProfileView]:
    """The profiles stored with ``trace_id``: its request first, then its jobs'."""
    with reading_store() as trace_store:
        rows = trace_store.trace_profiles(trace_id)
    views = []
    for row in rows:
        try:
            profile = Profile.loads(str(row["document"]))
        except ValueError:
            continue  # a damaged document is no profile to show
        views.append(profile_view(profile, row))
    return views


def profile_view(profile: Profile, row: dict[str, object]) -> ProfileView:
    whole = profile.duration_ms or 1.0
    groups = pd.DataFrame(
        [{"group": g.value, "self_ms": ms} for g, ms in profile.by_group().items() if ms > 0],
        columns=["group", "self_ms"],
    )
    groups["share"] = groups["self_ms"] / whole
    top = pd.DataFrame(
        [
            {"function": f.name, "where": f.where, "group": f.group.value, "self_ms": f.self_ms}
            for f in profile.self_times()[:TOP_FUNCTIONS]
        ],
        columns=["function", "where", "group", "self_ms"],
    )
    top["share"] = top["self_ms"] / whole
    return ProfileView(
        span_id=str(row["span_id"]),
        service=str(row["service"]),
        name=str(row["name"]),
        duration_ms=profile.duration_ms,
        by_group=groups.sort_values("self_ms", ascending=False, ignore_index=True),
        top=top,
        icicle=pd.DataFrame(
            profile.icicle(), columns=["id", "parent", "label", "total_ms", "group", "file"]
        ),
        document=profile.dumps(),
    )


@dataclass(frozen=True)
class ProfiledKind:
    """The request a trace is of, as far as profiling another like it goes."""

    method: str
    target: str  # path and query
    config: str


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def request_of(trace_id: str) -> ProfiledKind | None:
    """Method, target and configuration of the trace's request at the service (None: no such
    span in the store yet)."""
    with reading_store() as trace_store:
        spans = trace_store.trace_spans(trace_id)
    for span in spans:
        attributes = span.get("attributes") or {}
        if span.get("kind") != "SERVER" or span.get("role") != SERVICE_ROLE:
            continue
        target = attributes.get("http.target") or attributes.get("url.path") or ""
        query = attributes.get("url.query")
        if query and "?" not in str(target):
            target = f"{target}?{query}"
        method = v.first_attribute(attributes, v.HTTP_METHOD_KEYS) or ""
        return ProfiledKind(str(method), str(target), str(attributes.get(v.CONFIG_KEY) or ""))
    return None


def profile_request(target: str, config: str) -> str:
    """Send ``GET target`` to the service in ``config``, profiled; its trace id."""
    with admin_errors():
        trace_id = admin_client().profiled_get(target, config)
    trace_profiles.clear()
    return trace_id
