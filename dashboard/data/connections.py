"""The dashboard's connections, one per process (``st.cache_resource``): the lab's settings,
the trace store, the admin API's HTTP client, Redis and the load runner.

:func:`reading_store` wraps a read of the store so that a database failure becomes a
:class:`~.errors.StoreUnavailable` that says what to check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import streamlit as st
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from latency_lab.core.admin_client import AdminClient
from latency_lab.core.settings import Settings
from latency_lab.dashboard.data.errors import RedisUnavailable, SettingsError, StoreUnavailable
from latency_lab.dashboard.load_runner import LoadRunner
from latency_lab.telemetry.store import TraceStore

ADMIN_TIMEOUT_S = 3.0
LIVE_TTL_S = 2.0  # how long live reads stay cached: every page and fragment share one per refresh


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The lab's settings, read from the environment once per dashboard process."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(str(error["msg"]) for error in exc.errors())
        raise SettingsError(problems, "Fix the LAB_* environment variables and restart.") from None


@st.cache_resource(show_spinner=False)
def store() -> TraceStore:
    """The trace store; its tables are created when missing, so a fresh path reads as empty."""
    url = settings().resolved_trace_store_url
    try:
        return TraceStore(url).create()
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(
            f"{redacted(url)}: {type(exc).__name__}",
            "Check LAB_TRACE_STORE_URL (or LAB_VAR_DIR), and that the database is running.",
        ) from None


@st.cache_resource(show_spinner=False)
def admin_client() -> AdminClient:
    """The lab's one admin API client (the CLI's too), with the dashboard's short timeout."""
    return AdminClient.from_settings(
        settings(),
        timeout_s=ADMIN_TIMEOUT_S,
        url_hint="LAB_SERVICE_URL in the dashboard's environment",
    )


@st.cache_resource(show_spinner=False)
def redis_client() -> redis.Redis:
    url = redis_url()
    if url is None:
        raise RedisUnavailable(
            "REDIS_URL is not set and no running lab was found in LAB_VAR_DIR.",
            "Start the dashboard with `latency-lab up` (it passes REDIS_URL on), or set REDIS_URL.",
        )
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


def redis_url() -> str | None:
    """``REDIS_URL``, else the running lab's private Redis (from ``var/lab.json``)."""
    lab = settings()
    if lab.redis_url:
        return lab.redis_url
    from latency_lab.lab.runtime import read_lab_info  # psutil and friends: only when needed

    info = read_lab_info(lab)
    url = info.urls.get("redis") if info else None
    return url if url and "***" not in url else None


@st.cache_resource(show_spinner=False)
def load_runner() -> LoadRunner:
    """The one load run of this dashboard process, shared by every session."""
    return LoadRunner()


def redacted(url: str) -> str:
    from latency_lab.lab.runtime import redact_url

    return redact_url(url)


@contextmanager
def reading_store() -> Iterator[TraceStore]:
    trace_store = store()
    try:
        yield trace_store
    except SQLAlchemyError as exc:
        raise StoreUnavailable(
            f"{redacted(trace_store.url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            "Check that the trace store's database is running and reachable.",
        ) from None
