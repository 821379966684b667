"""Everything the dashboard reads or changes, by source: trace store, admin API, Redis, load.

Pages never touch SQL, HTTP or Redis themselves: they call ``data.<function>`` (this package
re-exports every name they use), which returns data frames (or small typed objects) and raises a
:class:`DashboardError` that says what is wrong and what to do (service down, store unreachable,
Redis gone, admin token refused). An empty store is not an error: the frames come back empty and
pages show how to get traffic.

* :mod:`.connections`: settings, the trace store, the admin HTTP client, Redis, the load runner
  (``st.cache_resource``);
* :mod:`.summaries`: per-configuration figures at the front door, time series, route costs, the
  headline (the store's aggregates, ``st.cache_data`` with a short TTL);
* :mod:`.explorer`: request lists, one trace in detail, time by span kind;
* :mod:`.profiles`: a trace's profiles, and profiling the next request of a kind;
* :mod:`.admin`: toggles and world through the admin API;
* :mod:`.load`: the load run; :mod:`.jobs`: the RQ queue; :mod:`.source`: the tour's code;
  :mod:`.impact`: the article's impact table; :mod:`.errors`: what can go wrong, in words.
"""

from latency_lab.dashboard.data.admin import set_toggles, set_world, toggles, world
from latency_lab.dashboard.data.connections import (
    LIVE_TTL_S,
    admin_client,
    load_runner,
    reading_store,
    redis_client,
    redis_url,
    settings,
    store,
)
from latency_lab.dashboard.data.errors import (
    START_LAB_HINT,
    AdminRefused,
    DashboardError,
    InvalidChange,
    LoadProblem,
    RedisUnavailable,
    ServiceUnavailable,
    SettingsError,
    StoreUnavailable,
)
from latency_lab.dashboard.data.explorer import (
    TraceDetail,
    kind_breakdown,
    request_frame,
    request_list,
    trace_detail,
)
from latency_lab.dashboard.data.impact import impact_table
from latency_lab.dashboard.data.jobs import JobsSnapshot, jobs_snapshot, queue_depth, queue_flow
from latency_lab.dashboard.data.load import load_status, start_load, stop_load
from latency_lab.dashboard.data.profiles import (
    ProfiledKind,
    ProfileView,
    profile_request,
    request_of,
    trace_profiles,
)
from latency_lab.dashboard.data.source import source_of
from latency_lab.dashboard.data.summaries import (
    BUCKET_COLUMNS,
    EDGE_ROLE,
    MAX_BUCKETS,
    SERVICE_ROLE,
    SUMMARY_COLUMNS,
    Headline,
    bucket_frame,
    bucket_seconds,
    config_summary,
    current_and_previous,
    dropped_spans,
    headline,
    hit_rates_long,
    route_costs,
    since_ns,
    store_counts,
    summary_frame,
    time_series,
)

__all__ = [
    "BUCKET_COLUMNS",
    "EDGE_ROLE",
    "LIVE_TTL_S",
    "MAX_BUCKETS",
    "SERVICE_ROLE",
    "START_LAB_HINT",
    "SUMMARY_COLUMNS",
    "AdminRefused",
    "DashboardError",
    "Headline",
    "InvalidChange",
    "JobsSnapshot",
    "LoadProblem",
    "ProfileView",
    "ProfiledKind",
    "RedisUnavailable",
    "ServiceUnavailable",
    "SettingsError",
    "StoreUnavailable",
    "TraceDetail",
    "admin_client",
    "bucket_frame",
    "bucket_seconds",
    "config_summary",
    "current_and_previous",
    "dropped_spans",
    "headline",
    "hit_rates_long",
    "impact_table",
    "jobs_snapshot",
    "kind_breakdown",
    "load_runner",
    "load_status",
    "profile_request",
    "queue_depth",
    "queue_flow",
    "reading_store",
    "redis_client",
    "redis_url",
    "request_frame",
    "request_list",
    "request_of",
    "route_costs",
    "set_toggles",
    "set_world",
    "settings",
    "since_ns",
    "source_of",
    "start_load",
    "stop_load",
    "store",
    "store_counts",
    "summary_frame",
    "time_series",
    "toggles",
    "trace_detail",
    "trace_profiles",
    "world",
]
