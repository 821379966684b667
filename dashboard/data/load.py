"""Load control: one load run per dashboard process, sent to the front door (the edge)."""

from __future__ import annotations

from collections.abc import Mapping

from latency_lab.dashboard.data.connections import load_runner, settings
from latency_lab.dashboard.data.errors import LoadProblem
from latency_lab.dashboard.load_runner import LoadBusy, LoadStatus
from latency_lab.lab.loadgen import Endpoint, LoadError, LoadSpec


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
