"""The lab's programs as processes: what ``latency-lab up`` runs, in which order, and how.

:func:`lab_tiers` lists the processes in start-up order, each tier needing the ones before it: the
third-party simulator; the service (gunicorn), the RQ workers and the outbox relay; the edge and
the dashboard. Each :class:`~latency_lab.lab.children.ProcessSpec` holds the command line (the
programs' entry points, never imported here), the port and the readiness probe; the same command
lines run in the compose file's containers (``tests/deploy`` checks it). Every child gets
:func:`child_environment`: ours, plus where everything of this lab is. :func:`check_ports_free`
refuses a taken or doubled port before anything starts, naming the setting to change.

    for tier in lab_tiers(settings, LabOptions(dashboard=False), redis_url):
        print([spec.name for spec in tier])
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from latency_lab.core.settings import Settings
from latency_lab.lab.children import ProcessSpec
from latency_lab.lab.messages import LabError
from latency_lab.lab.probes import HttpProbe, Probe, RqWorkerProbe
from latency_lab.lab.process_tree import STOP_GRACE_S
from latency_lab.lab.supervisor import RestartPolicy

READY_TIMEOUT_S = 90.0
# Gunicorn hooks for preloaded apps: gc.freeze() before each fork (shared pages stay shared).
PRELOAD_HOOKS = "python:latency_lab.lab.gunicorn_hooks"
ESSENTIAL = frozenset({"service", "edge", "redis"})
"""Processes the lab cannot go on without: when one crash-loops, the lab stops."""


@dataclass(frozen=True)
class LabOptions:
    """Choices of ``latency-lab up`` that are not settings of the processes themselves."""

    dashboard: bool = True
    seed_leads: int = 5000
    ready_timeout_s: float = READY_TIMEOUT_S
    stop_grace_s: float = STOP_GRACE_S
    restart: RestartPolicy | None = None  # default: RestartPolicy with ready_timeout_s

    def restart_policy(self) -> RestartPolicy:
        return self.restart or RestartPolicy(ready_timeout_s=self.ready_timeout_s)


def dashboard_script() -> Path:
    """The Streamlit app, next to the ``lab`` package (checkout or site-packages)."""
    return Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def lab_tiers(settings: Settings, options: LabOptions, redis_url: str) -> list[list[ProcessSpec]]:
    """The lab's processes in start-up order: each tier needs the ones before it."""
    host = settings.host
    thirdparty = gunicorn_spec(
        "thirdparty",
        "latency_lab.simulator.app:create_thirdparty_app()",
        host=host,
        port=settings.thirdparty_port,
        threads=32,
        workers=1,
        probe=HttpProbe(f"{_local_url(host, settings.thirdparty_port)}/healthz"),
    )
    service = gunicorn_spec(
        "service",
        "latency_lab.service.app:create_app()",
        host=host,
        port=settings.service_port,
        threads=4,
        workers=settings.service_workers,
        probe=HttpProbe(f"{_local_url(host, settings.service_port)}/healthz"),
        preload=True,  # its workers are the lab's largest processes: they share the app's pages
    )
    # Each runs LAB_RQ_CONCURRENCY jobs at once on threads (worker/process.py): one is the default.
    workers = [
        ProcessSpec(
            f"worker-{n}",
            (sys.executable, "-m", "latency_lab.worker.process"),
            probe=RqWorkerProbe(redis_url),
            probe_while_running=False,
        )
        for n in range(1, settings.rq_workers + 1)
    ]
    relay = ProcessSpec("outbox-relay", (sys.executable, "-m", "latency_lab.worker.relay"))
    edge = gunicorn_spec(
        "edge",
        "latency_lab.edge.app:create_edge_app()",
        host=host,
        port=settings.edge_port,
        threads=16,
        workers=1,
        probe=HttpProbe(f"{_local_url(host, settings.edge_port)}/edge/healthz"),
    )
    front = [edge]
    if options.dashboard and dashboard_script().is_file():
        front.append(_streamlit(settings))
    return [[thirdparty], [service, *workers, relay], front]


def gunicorn_spec(
    name: str,
    app: str,
    *,
    host: str,
    port: int,
    threads: int,
    workers: int,
    probe: Probe,
    preload: bool = False,
) -> ProcessSpec:
    """A gunicorn server. ``preload``: the master builds the app once and its workers share
    those pages (copy on write) instead of each importing and building its own; the app must be
    safe to fork (see docs/architecture.md, "Forking")."""
    argv = (
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--threads",
        str(threads),
        "-w",
        str(workers),
        "-b",
        f"{_bind_host(host)}:{port}",
        *(("--preload", "--config", PRELOAD_HOOKS) if preload else ()),
        *_no_control_socket(),
        app,
    )
    return ProcessSpec(name, argv, probe=probe, port=port)


def _no_control_socket() -> tuple[str, ...]:
    """Gunicorn >= 25.1 opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl):
    the lab's three servers, and every other lab, would take it from each other."""
    release = tuple(int(part) for part in version("gunicorn").split(".")[:2] if part.isdigit())
    return ("--no-control-socket",) if release >= (25, 1) else ()


def _streamlit(settings: Settings) -> ProcessSpec:
    argv = (
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(dashboard_script()),
        "--server.port",
        str(settings.dashboard_port),
        "--server.address",
        settings.host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # No "Deploy" button (not a thing here) and, as a second guard, no tracebacks on the page.
        "--client.toolbarMode",
        "minimal",
        "--client.showErrorDetails",
        "none",
    )
    probe = HttpProbe(f"{_local_url(settings.host, settings.dashboard_port)}/_stcore/health")
    return ProcessSpec("dashboard", argv, probe=probe, port=settings.dashboard_port)


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _local_url(host: str, port: int) -> str:
    """Where this machine reaches a server bound to ``host`` (all interfaces: via loopback)."""
    reachable = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, _bind_host(host))
    return f"http://{reachable}:{port}"


def child_environment(
    settings: Settings, redis_url: str, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment every child gets: ours, plus where everything of this lab is."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "REDIS_URL": redis_url,
            "LAB_VAR_DIR": str(settings.var_dir),
            "LAB_HOST": settings.host,
            "LAB_EDGE_PORT": str(settings.edge_port),
            "LAB_SERVICE_PORT": str(settings.service_port),
            "LAB_THIRDPARTY_PORT": str(settings.thirdparty_port),
            "LAB_DASHBOARD_PORT": str(settings.dashboard_port),
            "LAB_THIRDPARTY_URL": settings.resolved_thirdparty_url,
            "LAB_SERVICE_URL": settings.resolved_service_url,
            "LAB_SERVICE_WORKERS": str(settings.service_workers),
            "LAB_RQ_WORKERS": str(settings.rq_workers),
            "LAB_RQ_CONCURRENCY": str(settings.rq_concurrency),
            "PYTHONUNBUFFERED": "1",  # so a log tail shows the last words of a dying child
        }
    )
    return env


def check_ports_free(host: str, specs: Iterable[ProcessSpec]) -> None:
    """Fail early, naming the process and its setting, when a port is taken or given twice."""
    seen: dict[int, str] = {}
    for spec in specs:
        if spec.port is None:
            continue
        if spec.port in seen:
            raise LabError(
                f"{_port_setting(spec.name)} and {_port_setting(seen[spec.port])} are "
                f"both {spec.port}: give each process its own port"
            )
        seen[spec.port] = spec.name
        if not port_is_free(host, spec.port):
            raise LabError(
                f"port {spec.port} on {host}, wanted by {spec.name}, is in use: stop what uses it "
                f"or choose another port with {_port_setting(spec.name)}"
            )


def _port_setting(process_name: str) -> str:
    return f"LAB_{process_name.upper()}_PORT"


def port_is_free(host: str, port: int) -> bool:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind(address)
        except OSError:
            return False
    return True
