"""Everything the dashboard reads or changes, in one place: trace store, admin API, Redis, load.

Pages never touch SQL, HTTP or Redis themselves: they call these functions, which return data
frames (or small typed objects) and raise a :class:`DashboardError` that says what is wrong and
what to do (service down, store unreachable, Redis gone, admin token refused). An empty store is
not an error: the frames come back empty and pages show how to get traffic.

Where the numbers come from: the *front door*. The edge's summary rows describe whole requests
as the user saw them (latency, status, the edge's hit or miss, and the service's own accounting
read back from ``Server-Timing``: statements, third-party time, jobs, L1/L2 outcomes), so edge
hits count as requests with no statements, and the dashboard's own admin calls (which go to the
service directly) never dilute the figures. Configurations the edge never saw (traffic sent
straight to the service) fall back to the service's rows.

Aggregation happens in the store's SQL (:meth:`TraceStore.aggregate_by_config`,
:meth:`TraceStore.aggregate_by_time`), in time buckets sized so no chart gets more than a few
hundred points per configuration. Connections are ``st.cache_resource``; query results are
``st.cache_data`` with a short TTL, so every page and the live fragment share one query per
refresh.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
import redis
import streamlit as st
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from latency_lab.core.access import ADMIN_TOKEN_HEADER
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import Toggles
from latency_lab.core.world import World
from latency_lab.dashboard import configs, traces
from latency_lab.dashboard.load_runner import LoadBusy, LoadRunner, LoadStatus
from latency_lab.lab.loadgen import Endpoint, LoadError, LoadSpec
from latency_lab.telemetry.nplusone import Finding
from latency_lab.telemetry.store import TraceStore, requests_table, spans_table

LIVE_TTL_S = 2.0
ADMIN_TIMEOUT_S = 3.0
EDGE_ROLE, SERVICE_ROLE = "edge", "service"
DEFAULT_SERVICES = {EDGE_ROLE: "latency-lab-edge", SERVICE_ROLE: "latency-lab-service"}
BUCKET_CHOICES_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_BUCKETS = 300
RENAMED = {
    "avg_db_statements": "statements",
    "avg_db_time_ms": "db_ms",
    "avg_ext_calls": "ext_calls",
    "avg_ext_time_ms": "ext_ms",
    "avg_jobs_enqueued": "jobs",
}
SUMMARY_COLUMNS = [
    "config",
    "label",
    "measured_at",
    "first_ns",
    "last_ns",
    "requests",
    "requests_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "avg_ms",
    "error_rate",
    "statements",
    "db_ms",
    "ext_calls",
    "ext_ms",
    "jobs",
    "hit_rate_edge",
    "hit_rate_redis",
    "hit_rate_app",
]
BUCKET_COLUMNS = [
    "time",
    "bucket_start_ns",
    "config",
    "label",
    "measured_at",
    "first_ns",
    "requests",
    "requests_per_s",
    "p50_ms",
    "p95_ms",
    "avg_ms",
    "error_rate",
    "statements",
    "ext_ms",
    "hit_rate_edge",
    "hit_rate_redis",
    "hit_rate_app",
]


# --- errors --------------------------------------------------------------------------------------
class DashboardError(Exception):
    """Something the dashboard cannot show: ``message`` says what, ``hint`` what to do."""

    title = "Something is not available"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class SettingsError(DashboardError):
    title = "The lab's settings are invalid"


class ServiceUnavailable(DashboardError):
    title = "The lead service does not answer"


class AdminRefused(DashboardError):
    title = "The admin API refused the dashboard"


class InvalidChange(DashboardError):
    title = "The lab refused that change"


class StoreUnavailable(DashboardError):
    title = "The trace store cannot be read"


class RedisUnavailable(DashboardError):
    title = "Redis is not reachable"


class LoadProblem(DashboardError):
    title = "The load run could not start"


START_LAB_HINT = "Start the lab with `latency-lab up` (it starts everything and prints the URLs)."


# --- connections ---------------------------------------------------------------------------------
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
            f"{_redacted(url)}: {type(exc).__name__}",
            "Check LAB_TRACE_STORE_URL (or LAB_VAR_DIR), and that the database is running.",
        ) from None


@st.cache_resource(show_spinner=False)
def admin_client() -> httpx.Client:
    lab = settings()
    headers = {ADMIN_TOKEN_HEADER: lab.admin_token} if lab.admin_token else {}
    return httpx.Client(base_url=lab.resolved_service_url, headers=headers, timeout=ADMIN_TIMEOUT_S)


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


def _redacted(url: str) -> str:
    from latency_lab.lab.runtime import redact_url

    return redact_url(url)


@contextmanager
def _reading_store() -> Iterator[TraceStore]:
    trace_store = store()
    try:
        yield trace_store
    except SQLAlchemyError as exc:
        raise StoreUnavailable(
            f"{_redacted(trace_store.url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            "Check that the trace store's database is running and reachable.",
        ) from None


# --- windows and buckets -------------------------------------------------------------------------
def since_ns(window_s: int) -> int:
    return time.time_ns() - int(window_s * 1e9)


def bucket_seconds(window_s: int) -> int:
    """The smallest round bucket that keeps a window under :data:`MAX_BUCKETS` buckets."""
    for choice in BUCKET_CHOICES_S:
        if window_s / choice <= MAX_BUCKETS:
            return choice
    return BUCKET_CHOICES_S[-1]


@st.cache_data(ttl=30, show_spinner=False)
def service_names() -> dict[str, str]:
    """Service name per process role, from the processes that reported (defaults otherwise)."""
    names = dict(DEFAULT_SERVICES)
    with _reading_store() as trace_store:
        for row in reversed(trace_store.process_stats()):
            if row["role"] in names:
                names[row["role"]] = row["service"]
    return names


# --- per configuration ---------------------------------------------------------------------------
@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def config_summary(window_s: int, route: str | None = None) -> pd.DataFrame:
    """One row per configuration seen in the window, oldest first (see :data:`SUMMARY_COLUMNS`).

    With ``route`` (a service route such as ``/api/leads``), only that route's requests count,
    measured at the service: the edge forwards every path through one catch-all route.
    """
    names = service_names()
    since = since_ns(window_s)
    with _reading_store() as trace_store:
        if route is not None:
            service = names[SERVICE_ROLE]
            return merge_summaries(
                [], trace_store.aggregate_by_config(since_ns=since, service=service, route=route)
            )
        front = trace_store.aggregate_by_config(since_ns=since, service=names[EDGE_ROLE])
        back = (
            trace_store.aggregate_by_config(since_ns=since, service=names[SERVICE_ROLE])
            if _direct_traffic(trace_store, since, {row["config"] for row in front})
            else []
        )
    return merge_summaries(front, back)


def _direct_traffic(trace_store: TraceStore, since: int, at_edge: set[str]) -> bool:
    """Whether a configuration reached the service in the window without passing the edge.

    Usually none did, and the service's aggregate (as costly as the edge's on a big store) can
    be skipped: the edge's rows already carry the service's accounting.
    """
    r = requests_table.c
    query = (
        select(r.config)
        .where(r.service == service_names()[SERVICE_ROLE], r.start_ns >= since, r.config != "")
        .distinct()
    )
    with trace_store.engine.connect() as connection:
        return any(config not in at_edge for config in connection.execute(query).scalars())


def merge_summaries(
    front: Sequence[Mapping[str, Any]], back: Sequence[Mapping[str, Any]]
) -> pd.DataFrame:
    """One row per configuration: the edge's rows where it saw the configuration, else the
    service's."""
    edge, service = _indexed(front, "config"), _indexed(back, "config")
    if edge.empty and service.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    out = _front_door(edge, service)
    out["requests_per_s"] = out["requests"] / _seconds(out["first_ns"], out["last_ns"])
    out = out.reset_index(names="config")
    out["label"] = out["config"].map(configs.short_label)
    out = out[out["config"] != ""]
    return out.sort_values("first_ns")[SUMMARY_COLUMNS].reset_index(drop=True)


def _indexed(rows: Sequence[Mapping[str, Any]], *keys: str) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    return frame.rename(columns=RENAMED).set_index(list(keys))


def _front_door(edge: pd.DataFrame, service: pd.DataFrame) -> pd.DataFrame:
    """The edge's rows, plus the service's for configurations the edge never saw (traffic sent
    straight to the service). The edge's rows carry the service's accounting (from
    ``Server-Timing``), so they describe whole requests as the user saw them, edge hits
    included. The choice is per configuration, not per bucket: a bucket where only the
    dashboard's own admin calls reached the service must not become a point of its own."""
    parts = []
    seen = set(edge.index.get_level_values("config")) if not edge.empty else set()
    if not edge.empty:
        parts.append(edge.assign(measured_at=EDGE_ROLE))
    if not service.empty:
        direct = ~service.index.get_level_values("config").isin(seen)
        parts.append(service[direct].assign(measured_at=SERVICE_ROLE))
    return pd.concat(parts)


def _seconds(first_ns: pd.Series, last_ns: pd.Series) -> pd.Series:
    """Seconds between first and last request, at least one (a single request is 1 req/s)."""
    return ((last_ns - first_ns) / 1e9).clip(lower=1.0)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def route_costs(window_s: int, route: str, method: str = "GET") -> pd.DataFrame:
    """Per configuration, the average cost of one route and method at the service.

    The store's aggregates filter by route but not by method, and ``/api/leads`` is both the
    list (GET) and the create (POST): "statements per list request" needs both filters. A plain
    ``GROUP BY`` over the summary rows. Columns: ``config``, ``requests``, ``statements``,
    ``ext_ms``.
    """
    r = requests_table.c
    query = (
        select(
            r.config,
            func.count().label("requests"),
            func.avg(r.db_statements).label("statements"),
            func.avg(r.ext_time_ms).label("ext_ms"),
        )
        .where(
            r.service == service_names()[SERVICE_ROLE],
            r.route == route,
            r.method == method,
            r.start_ns >= since_ns(window_s),
        )
        .group_by(r.config)
    )
    with _reading_store() as trace_store, trace_store.engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
    frame = pd.DataFrame(rows, columns=["config", "requests", "statements", "ext_ms"])
    return frame.astype({"statements": float, "ext_ms": float})


@dataclass(frozen=True)
class Headline:
    """The configuration running now, the one before it, and the lab-wide gauges."""

    current: dict[str, Any] | None
    previous: dict[str, Any] | None
    queue_depth: int | None
    dropped_spans: int


def current_and_previous(
    summary: pd.DataFrame,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The configuration with the latest request, and the one whose last request came before."""
    if summary.empty:
        return None, None
    ordered = summary.sort_values("last_ns", ascending=False).to_dict("records")
    return ordered[0], (ordered[1] if len(ordered) > 1 else None)


def headline(window_s: int) -> Headline:
    current, previous = current_and_previous(config_summary(window_s))
    return Headline(current, previous, queue_depth(), dropped_spans())


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def dropped_spans() -> int:
    with _reading_store() as trace_store:
        return trace_store.dropped_spans()


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def store_counts() -> dict[str, int]:
    with _reading_store() as trace_store:
        return trace_store.counts()


# --- over time -----------------------------------------------------------------------------------
@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def time_series(window_s: int) -> pd.DataFrame:
    """Per time bucket and configuration: latency, requests/s, statements, hit rates
    (see :data:`BUCKET_COLUMNS`)."""
    names = service_names()
    bucket_s = bucket_seconds(window_s)
    since = since_ns(window_s)
    with _reading_store() as trace_store:
        front = trace_store.aggregate_by_time(bucket_s, since_ns=since, service=names[EDGE_ROLE])
        back = (
            trace_store.aggregate_by_time(bucket_s, since_ns=since, service=names[SERVICE_ROLE])
            if _direct_traffic(trace_store, since, {row["config"] for row in front})
            else []
        )
    return merge_buckets(front, back, bucket_s)


def merge_buckets(
    front: Sequence[Mapping[str, Any]], back: Sequence[Mapping[str, Any]], bucket_s: float
) -> pd.DataFrame:
    """One row per (bucket, configuration), from the edge where it saw it, else the service."""
    keys = ("bucket_start_ns", "config")
    edge, service = _indexed(front, *keys), _indexed(back, *keys)
    if edge.empty and service.empty:
        return pd.DataFrame(columns=BUCKET_COLUMNS)
    out = _front_door(edge, service).reset_index()
    out = out[out["config"] != ""]
    out["time"] = pd.to_datetime(out["bucket_start_ns"], unit="ns", utc=True)
    out["label"] = out["config"].map(configs.short_label)
    out["requests_per_s"] = out["requests"] / bucket_s
    return out.sort_values(["bucket_start_ns", "first_ns"])[BUCKET_COLUMNS].reset_index(drop=True)


def hit_rates_long(series: pd.DataFrame) -> pd.DataFrame:
    """``time``, ``layer``, ``hit_rate`` rows for the layers that were consulted."""
    layers = {"hit_rate_edge": "edge (CDN)", "hit_rate_redis": "L1 Redis", "hit_rate_app": "L2 app"}
    if series.empty:
        return pd.DataFrame(columns=["time", "layer", "hit_rate"])
    long = series.melt(
        id_vars=["time"], value_vars=list(layers), var_name="layer", value_name="hit_rate"
    )
    long["layer"] = long["layer"].map(layers)
    return long.dropna(subset=["hit_rate"]).reset_index(drop=True)


# --- requests and traces -------------------------------------------------------------------------
@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def request_list(window_s: int, *, slowest: bool = True, limit: int = 200) -> pd.DataFrame:
    """Requests that reached the service, slowest (or newest) first, ready for a table."""
    service = service_names()[SERVICE_ROLE]
    since = since_ns(window_s)
    with _reading_store() as trace_store:
        rows = (
            trace_store.slowest_requests(limit, since, service=service)
            if slowest
            else trace_store.recent_requests(limit, service=service, since_ns=since)
        )
    return request_frame(rows)


def request_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    columns = [
        "trace_id",
        "time",
        "request",
        "status",
        "duration_ms",
        "statements",
        "ext_ms",
        "jobs",
        "n_plus_one",
        "configuration",
        "config",
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(list(rows))
    frame["time"] = pd.to_datetime(frame["start_ns"], unit="ns", utc=True)
    frame["request"] = (
        frame["method"] + " " + frame["target"].where(frame["target"] != "", frame["route"])
    )
    frame = frame.drop(columns=["n_plus_one"]).rename(
        columns={
            "db_statements": "statements",
            "ext_time_ms": "ext_ms",
            "jobs_enqueued": "jobs",
            "n_plus_one_count": "n_plus_one",
        }
    )
    frame["configuration"] = frame["config"].map(configs.short_label)
    return frame[columns]


@dataclass(frozen=True)
class TraceDetail:
    """One trace, shaped for the explorer."""

    trace_id: str
    spans: pd.DataFrame
    waterfall: pd.DataFrame
    by_kind: pd.DataFrame
    findings: list[Finding]
    jobs: pd.DataFrame


@st.cache_data(ttl=5, show_spinner=False)
def trace_detail(trace_id: str) -> TraceDetail:
    """The waterfall, time by kind, N+1 findings and background jobs of one trace."""
    with _reading_store() as trace_store:
        spans = trace_store.trace_spans(trace_id)
    annotated = traces.annotate(traces.span_frame(spans))
    findings = traces.findings_of(annotated)
    jobs = pd.DataFrame(
        [job.__dict__ for job in traces.background_jobs(annotated)],
        columns=["func", "queue", "wait_ms", "run_ms", "status", "after_response_ms"],
    )
    return TraceDetail(
        trace_id=trace_id,
        spans=annotated.drop(columns=["attributes"], errors="ignore"),
        waterfall=traces.waterfall(annotated, findings),
        by_kind=traces.time_by_kind(annotated[~annotated["off_path"]])
        if not annotated.empty
        else traces.time_by_kind(annotated),
        findings=findings,
        jobs=jobs,
    )


@st.cache_data(ttl=10, show_spinner=False)
def kind_breakdown(configs_: tuple[str, ...], window_s: int, sample: int = 50) -> pd.DataFrame:
    """Per configuration: average self time and span count per span kind, per request.

    Reads the spans of the ``sample`` most recent front-door requests of each configuration
    (one indexed query per configuration, then one for their spans), so it stays fast on a
    large store. Columns: ``config``, ``label``, ``kind``, ``time_ms``, ``spans``, ``sampled``.
    """
    frames = []
    for config in configs_:
        spans, sampled = _sampled_spans(config, since_ns(window_s), sample)
        kinds = traces.time_by_kind_per_request(spans)
        kinds["config"], kinds["label"], kinds["sampled"] = (
            config,
            configs.short_label(config),
            sampled,
        )
        frames.append(kinds)
    if not frames:
        return pd.DataFrame(columns=["config", "label", "kind", "time_ms", "spans", "sampled"])
    return pd.concat(frames, ignore_index=True)


def _sampled_spans(config: str, since: int, sample: int) -> tuple[pd.DataFrame, int]:
    names = service_names()
    r, s = requests_table.c, spans_table.c
    with _reading_store() as trace_store, trace_store.engine.connect() as connection:
        trace_ids: list[str] = []
        for role in (EDGE_ROLE, SERVICE_ROLE):
            query = (
                select(r.trace_id)
                .where(r.config == config, r.service == names[role], r.start_ns >= since)
                .order_by(r.start_ns.desc())
                .limit(sample)
            )
            trace_ids = list(connection.execute(query).scalars())
            if trace_ids:
                break
        columns = [s[name] for name in traces.SPAN_COLUMNS]
        rows = connection.execute(select(*columns).where(s.trace_id.in_(trace_ids))).mappings()
        frame = traces.span_frame([dict(row) for row in rows])
    return frame, len(trace_ids)


# --- the admin API -------------------------------------------------------------------------------
def _admin(method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    url = settings().resolved_service_url
    try:
        response = admin_client().request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"{url} did not answer ({type(exc).__name__}).",
            f"{START_LAB_HINT} If it runs elsewhere, set LAB_SERVICE_URL for the dashboard.",
        ) from None
    if response.status_code in (401, 403):
        raise AdminRefused(
            _error_text(response),
            "Give the dashboard the lab's token: LAB_ADMIN_TOKEN=<token> in its environment.",
        )
    if response.status_code in (400, 422):
        raise InvalidChange(_error_text(response), "Adjust the value and try again.")
    if response.status_code >= 400:
        raise ServiceUnavailable(
            f"{url}{path} answered {response.status_code}: {_error_text(response)}",
            "Look at the service's log (LAB_VAR_DIR/log/service.log).",
        )
    return response.json()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except ValueError:
        return response.text[:200] or response.reason_phrase


@st.cache_data(ttl=3, show_spinner=False)
def toggles() -> Toggles:
    """The live toggles every service process follows."""
    return Toggles(**_admin("GET", "/admin/toggles")["toggles"])


def set_toggles(changes: Mapping[str, bool]) -> Toggles:
    """Change some toggles for every process (effective within 1 s)."""
    answer = _admin("PUT", "/admin/toggles", dict(changes))
    toggles.clear()
    return Toggles(**answer["toggles"])


@st.cache_data(ttl=3, show_spinner=False)
def world() -> World:
    """The simulated world's live settings."""
    return World.model_validate(_admin("GET", "/admin/world"))


def set_world(changes: Mapping[str, Any]) -> World:
    answer = _admin("PUT", "/admin/world", dict(changes))
    world.clear()
    return World.model_validate(answer)


# --- load ----------------------------------------------------------------------------------------
def start_load(
    *,
    requests: int,
    concurrency: int,
    rate_per_s: float | None,
    mix: Mapping[Endpoint, float],
) -> LoadStatus:
    """Start a load run against the front door (the edge), outside the script thread."""
    lab = settings()
    try:
        spec = LoadSpec(
            base_url=lab.edge_url,
            requests=requests,
            concurrency=concurrency,
            rate_per_s=rate_per_s,
            mix=dict(mix),
            admin_token=lab.admin_token,
        )
        return load_runner().start(spec)
    except (LoadError, LoadBusy) as exc:
        raise LoadProblem(str(exc), "Change the load settings, or stop the current run.") from None


def stop_load() -> LoadStatus:
    return load_runner().stop()


def load_status() -> LoadStatus:
    return load_runner().status()


# --- jobs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobsSnapshot:
    """The side-effects queue as RQ sees it."""

    counts: dict[str, int]
    workers: pd.DataFrame
    finished: pd.DataFrame
    failures: pd.DataFrame


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def jobs_snapshot(recent: int = 200) -> JobsSnapshot:
    """Queue length, registries, workers, recent job durations and failures."""
    from rq import Queue, Worker  # rq pulls in a lot; only the jobs page needs it

    from latency_lab.service.offload import QUEUE_NAME

    connection = redis_client()
    try:
        queue = Queue(QUEUE_NAME, connection=connection)
        counts = {
            "queued": queue.count,
            "started": queue.started_job_registry.count,
            "finished": queue.finished_job_registry.count,
            "failed": queue.failed_job_registry.count,
            "scheduled": queue.scheduled_job_registry.count,
            "deferred": queue.deferred_job_registry.count,
        }
        workers = _workers_frame(Worker.all(connection=connection))
        finished = _jobs_frame(
            queue.finished_job_registry.get_job_ids(0, recent - 1, desc=True), connection
        )
        failures = _jobs_frame(
            queue.failed_job_registry.get_job_ids(0, recent - 1, desc=True), connection
        )
    except redis.RedisError as exc:
        raise _redis_down(exc) from None
    return JobsSnapshot(counts, workers, finished, failures)


def _redis_down(exc: Exception) -> RedisUnavailable:
    return RedisUnavailable(
        f"{_redacted(redis_url() or '')}: {type(exc).__name__}: {exc}",
        "Is the lab running? `latency-lab up` starts Redis; with REDIS_URL set, start that Redis.",
    )


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def queue_depth() -> int | None:
    """Jobs waiting in the side-effects queue; ``None`` when Redis cannot be asked."""
    from rq import Queue

    from latency_lab.service.offload import QUEUE_NAME

    try:
        return int(Queue(QUEUE_NAME, connection=redis_client()).count)
    except (redis.RedisError, RedisUnavailable):
        return None


def _workers_frame(workers: Sequence[Any]) -> pd.DataFrame:
    rows = [
        {
            "worker": worker.name,
            "state": str(worker.get_state()),
            "pid": worker.pid,
            "current job": worker.get_current_job_id() or "",
            "succeeded": worker.successful_job_count,
            "failed": worker.failed_job_count,
            "busy for (s)": round(float(worker.total_working_time or 0), 2),
            "last heartbeat": worker.last_heartbeat,
        }
        for worker in workers
    ]
    columns = [
        "worker",
        "state",
        "pid",
        "current job",
        "succeeded",
        "failed",
        "busy for (s)",
        "last heartbeat",
    ]
    return pd.DataFrame(rows, columns=columns)


def _jobs_frame(job_ids: Sequence[str], connection: redis.Redis) -> pd.DataFrame:
    from rq.job import Job

    rows = [_job_row(job) for job in Job.fetch_many(list(job_ids), connection=connection) if job]
    columns = ["job", "task", "enqueued", "wait_ms", "run_ms", "ended", "error", "traceback"]
    return pd.DataFrame(rows, columns=columns)


def _job_row(job: Any) -> dict[str, Any]:
    enqueued, started, ended = job.enqueued_at, job.started_at, job.ended_at
    result = job.latest_result()
    traceback_text = (result.exc_string or "") if result is not None else ""
    return {
        "job": job.id,
        "task": _task_name(job),
        "enqueued": _aware(enqueued),
        "wait_ms": _between_ms(enqueued, started),
        "run_ms": _between_ms(started, ended),
        "ended": _aware(ended),
        "error": traceback_text.strip().splitlines()[-1] if traceback_text.strip() else "",
        "traceback": traceback_text,
    }


def _task_name(job: Any) -> str:
    try:
        return str(job.func_name).rsplit(".", 1)[-1]
    except Exception:  # a job whose payload cannot be decoded still gets a row
        return "?"


def _between_ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 1)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- the service's own source, for the guided tour -----------------------------------------------
def source_of(target: str) -> str:
    """The source of ``module:qualname`` (e.g. ``latency_lab.service.api:_strategy``), dedented.

    Only a found source is cached: a target that failed once (a module being edited) is looked
    up again on the next run instead of showing the failure for the dashboard's lifetime.
    """
    try:
        return _cached_source(target)
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        return f"# The source of {target} is not available here ({type(exc).__name__}: {exc})"


@st.cache_data(show_spinner=False)
def _cached_source(target: str) -> str:
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return textwrap.dedent(inspect.getsource(obj))


# --- the article's "Measurable impact", live ------------------------------------------------------
def impact_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with ratios to the all-off baseline: ``p50_vs_baseline``, ``speedup``...

    Ratios are ``None`` when the baseline was not measured in the window.
    """
    out = summary.copy()
    base = out[out["config"] == configs.BASELINE]
    if base.empty or out.empty:
        out["p50_vs_baseline"] = None
        out["throughput_vs_baseline"] = None
        out["statements_vs_baseline"] = None
        out["speedup"] = None
        return out
    baseline = base.iloc[0]
    out["p50_vs_baseline"] = out["p50_ms"] / baseline["p50_ms"]
    out["throughput_vs_baseline"] = out["requests_per_s"] / baseline["requests_per_s"]
    out["statements_vs_baseline"] = (
        out["statements"] / baseline["statements"] if baseline["statements"] else None
    )
    out["speedup"] = [
        f"{1 / ratio:.1f}\u00d7 faster" if ratio and ratio < 1 else f"{ratio:.1f}\u00d7 baseline"
        for ratio in out["p50_vs_baseline"]
    ]
    return out
