"""Run the whole lab on this machine: what ``latency-lab up`` does.

Start-up order, each step waiting for the one before to answer:

1. Redis: ``REDIS_URL`` when given, else a private ``redis-server`` on a free port
   (:class:`~latency_lab.lab.redis_server.RedisServer`'s command line, working directory
   ``var/redis``);
2. the lead database, seeded once (skipped when it already holds a data set);
3. the third-party simulator; then the service (gunicorn), the RQ workers and the outbox relay
   (:mod:`latency_lab.worker.relay`); then the edge and the dashboard.

Every child runs in its own session (process group) with its output in ``var/log/<name>.log``, and
learns where everything is from its environment (``REDIS_URL``, ``LAB_VAR_DIR``, ``LAB_HOST``, the
ports, ``LAB_THIRDPARTY_URL``, ``LAB_SERVICE_URL``). A child that dies, or does not answer its
readiness URL in time, during start-up stops the start-up with an error naming it and quoting its
log.

Once the lab is up, :class:`~latency_lab.lab.supervisor.Supervisor` looks after the children: one
that dies is started again with exponential backoff and counts as back once its readiness probe
passes again; one that crash-loops (5 exits within 60 s) is given up on with its log quoted, and
only if it is essential (the service, the edge, the lab's own Redis) does the lab then stop. A
restarted Redis is empty: the service, the workers and the outbox relay ride that out
(docs/reliability.md). Why our own supervisor rather than supervisord or circus: see
:mod:`latency_lab.lab.supervisor`.

Stopping sends SIGTERM to each process group (last started first), waits, then SIGKILLs whatever
is left, including descendants that left the group (RQ's work horses call ``setpgrp``). While it
runs, the lab describes itself in ``var/lab.json`` (URLs, PIDs, and per process its state, start
time, restarts and last exit), which ``latency-lab status`` and the dashboard read and ``stop``
removes.

The pieces, each in its own module: :mod:`~latency_lab.lab.programs` (what runs, in which tier,
with which environment and ports), :mod:`~latency_lab.lab.supervisor` (the restart policy),
:mod:`~latency_lab.lab.probes` (readiness), :mod:`~latency_lab.lab.process_tree` (spawning and
stopping process trees), :mod:`~latency_lab.lab.children` and :mod:`~latency_lab.lab.messages`;
this module is the :class:`Lab` that puts them together, and re-exports the names its importers
use.

Usage::

    lab = Lab(Settings(), LabOptions(dashboard=False))
    exit_code = lab.run()  # blocks until Ctrl-C / SIGTERM (0), or an essential child is lost (1)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import psutil
import redis

from latency_lab.core.settings import Settings
from latency_lab.lab.children import ProcessSpec, RunningProcess, describe_exit
from latency_lab.lab.lab_info import (
    LabInfo,
    ProcessStatus,
    lab_file,
    process_statuses,
    read_lab_info,
    write_lab_info,
)
from latency_lab.lab.messages import LabError, log_excerpt, redact_url
from latency_lab.lab.probes import HttpProbe, RedisProbe, RqWorkerProbe
from latency_lab.lab.process_tree import terminate_trees
from latency_lab.lab.programs import (
    ESSENTIAL,
    READY_TIMEOUT_S,
    LabOptions,
    check_ports_free,
    child_environment,
    dashboard_script,
    gunicorn_spec,
    lab_tiers,
)
from latency_lab.lab.redis_server import RedisServer, RedisUnavailable
from latency_lab.lab.supervisor import POLL_INTERVAL_S, Supervisor

__all__ = [
    "READY_TIMEOUT_S",
    "HttpProbe",
    "Lab",
    "LabError",
    "LabInfo",
    "LabOptions",
    "ProcessSpec",
    "ProcessStatus",
    "RqWorkerProbe",
    "RunningProcess",
    "Supervisor",
    "check_ports_free",
    "child_environment",
    "dashboard_script",
    "describe_exit",
    "gunicorn_spec",
    "lab_tiers",
    "log_excerpt",
    "process_statuses",
    "read_lab_info",
    "redact_url",
    "terminate_trees",
]

REDIS_READY_TIMEOUT_S = 10.0

Say = Callable[[str], None]


class StopRequested(BaseException):  # like KeyboardInterrupt: not an Exception
    """SIGINT or SIGTERM arrived: unwind whatever is starting, then stop everything."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _print(message: str) -> None:
    print(message, flush=True)


def _print_error(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Lab:
    """The whole lab on this machine: ``run()`` starts it, serves until told, and stops it."""

    def __init__(
        self,
        settings: Settings,
        options: LabOptions | None = None,
        *,
        say: Say = _print,
        warn: Say = _print_error,
    ) -> None:
        self.settings = settings.model_copy(update={"var_dir": settings.var_dir.resolve()})
        self.options = options or LabOptions()
        self.say = say
        self.warn = warn
        self.redis_url = ""
        self.redis_server: RedisServer | None = None
        self.supervisor: Supervisor | None = None
        self._interruptible = True
        self._stopping = False
        self._pending_signal: int | None = None
        self._hurry = threading.Event()

    # --- run: the whole life of `latency-lab up` -------------------------------------------
    def run(self) -> int:
        """Start, announce, serve until SIGINT/SIGTERM (exit 0) or an essential child is lost or
        the start fails (exit 1)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            self.announce()
            failure = self.watch()
            self._stopping = True
            self.warn(f"Error: {failure}\nStopping the lab.")
            exit_code = 1
        except StopRequested as stop:
            self._stopping = True
            self.say(f"{stop} received: stopping the lab (press Ctrl-C again to kill it now)...")
            exit_code = 0
        except LabError as error:
            self._stopping = True
            self.warn(f"Error: {error}")
            exit_code = 1
        finally:
            self._stopping = True
            started = self.supervisor is not None
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        ending = "The lab has stopped." if exit_code == 0 else "The lab stopped after an error."
        if started:
            self.say(ending)
        return exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            self._hurry.set()  # a second Ctrl-C: skip the grace period, SIGKILL now
        elif self._interruptible:
            raise StopRequested(signum)
        else:
            self._pending_signal = signum

    @contextlib.contextmanager
    def _shielded(self) -> Iterator[None]:
        """No StopRequested while a child is being spawned: it would escape the bookkeeping."""
        self._interruptible = False
        try:
            yield
        finally:
            self._interruptible = True
        if self._pending_signal is not None:
            raise StopRequested(self._pending_signal)

    # --- start ----------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        self._refuse_second_lab()
        tiers = lab_tiers(settings, self.options, "")  # only for the ports they will bind
        check_ports_free(settings.host, [spec for tier in tiers for spec in tier])
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        redis_spec = self._redis_spec()
        self.supervisor = Supervisor(
            settings.log_dir,
            child_environment(settings, self.redis_url),
            warn=self.warn,
            policy=self.options.restart_policy(),
        )
        if redis_spec is not None:
            self.say("starting Redis...")
            self._start_tier([redis_spec], 0, REDIS_READY_TIMEOUT_S)
        self._seed()
        for number, tier in enumerate(lab_tiers(settings, self.options, self.redis_url), 1):
            self.say("starting " + ", ".join(spec.name for spec in tier) + "...")
            self._start_tier(tier, number, self.options.ready_timeout_s)
        write_lab_info(lab_file(settings), self.info())

    def _start_tier(self, tier: list[ProcessSpec], number: int, timeout_s: float) -> None:
        assert self.supervisor is not None
        with self._shielded():
            started = [
                self.supervisor.spawn(
                    dataclasses.replace(spec, essential=spec.name in ESSENTIAL), tier=number
                )
                for spec in tier
            ]
        self.supervisor.wait_ready(started, timeout_s)

    def _refuse_second_lab(self) -> None:
        running = read_lab_info(self.settings)
        if running is not None:
            raise LabError(
                f"a lab is already running from {self.settings.var_dir} (pid {running.pid}, "
                f"edge {running.urls.get('edge')}): stop it first (Ctrl-C in its terminal, or "
                f"`kill -INT {running.pid}`), or use another LAB_VAR_DIR"
            )
        lab_file(self.settings).unlink(missing_ok=True)  # a stale file from a killed lab

    def _redis_spec(self) -> ProcessSpec | None:
        """The lab's own Redis as a child (None when ``REDIS_URL`` names one); sets redis_url."""
        if self.settings.redis_url:
            _check_redis(self.settings.redis_url)
            self.redis_url = self.settings.redis_url
            return None
        workdir = self.settings.var_dir / "redis"
        server = RedisServer(workdir=workdir)
        try:
            argv = tuple(server.command())
        except RedisUnavailable as exc:
            raise LabError(f"could not start Redis: {exc}") from exc
        self.redis_server, self.redis_url = server, server.url
        return ProcessSpec(
            "redis",
            argv,
            probe=RedisProbe(server.url),
            before_start=lambda: workdir.mkdir(parents=True, exist_ok=True),
        )

    def _seed(self) -> None:
        from latency_lab.seed.seeding import is_seeded, seed_database  # heavy: SQLAlchemy, Faker

        url = self.settings.resolved_database_url
        try:
            if is_seeded(url):
                self.say(f"database already seeded: {redact_url(url)}")
                return
            self.say(f"seeding {self.options.seed_leads} leads into {redact_url(url)}...")
            seed_database(url, leads=self.options.seed_leads, progress=True)
        except Exception as exc:  # the database's own words are the useful part
            raise LabError(f"could not seed {redact_url(url)}: {exc}") from exc

    # --- serve ----------------------------------------------------------------------------
    def info(self) -> LabInfo:
        settings = self.settings
        urls = {
            "edge": settings.edge_url,
            "service": settings.resolved_service_url,
            "thirdparty": settings.resolved_thirdparty_url,
            "redis": redact_url(self.redis_url),
            "trace_store": redact_url(settings.resolved_trace_store_url),
            "database": redact_url(settings.resolved_database_url),
        }
        running = self.supervisor.running if self.supervisor else []
        processes = {p.spec.name: p.pid for p in running}
        if "dashboard" in processes:
            urls["dashboard"] = settings.dashboard_url
        return LabInfo(
            pid=os.getpid(),
            started_at=psutil.Process().create_time(),
            urls=urls,
            processes=processes,
            log_dir=str(settings.log_dir),
            owns_redis=self.redis_server is not None,
            children={p.spec.name: p.status() for p in running},
        )

    def announce(self) -> None:
        info = self.info()
        rows = [
            ("edge (front door)", info.urls["edge"]),
            ("service", info.urls["service"]),
            ("third-party simulator", info.urls["thirdparty"]),
            ("dashboard", info.urls.get("dashboard", "(not started)")),
            ("Redis", info.urls["redis"] + (" (private)" if info.owns_redis else "")),
            ("trace store", info.urls["trace_store"]),
            ("logs", info.log_dir),
        ]
        lines = [f"  {label:<22} {value}" for label, value in rows]
        self.say("\nLatency Lab is up.\n" + "\n".join(lines) + "\nPress Ctrl-C to stop.")

    def watch(self) -> str:
        """Keep the children running (restarting the ones that die) and ``var/lab.json`` up to
        date; return why the lab must stop: an essential child given up on. Signals interrupt
        with StopRequested."""
        assert self.supervisor is not None
        written = self.supervisor.statuses()
        while True:
            with self._shielded():  # a restart in progress is finished, then the signal acts
                failure = self.supervisor.tend()
            statuses = self.supervisor.statuses()
            if statuses != written:
                write_lab_info(lab_file(self.settings), self.info())
                written = statuses
            if failure is not None:
                return failure
            time.sleep(POLL_INTERVAL_S)

    # --- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every child (our Redis last); safe to call at any point, and more than once."""
        if self.supervisor is not None:
            self.supervisor.stop(self.options.stop_grace_s, hurry=self._hurry)
        self.redis_server = None
        info = read_lab_info(self.settings)
        if info is None or info.pid == os.getpid():
            lab_file(self.settings).unlink(missing_ok=True)


def _check_redis(url: str) -> None:
    try:
        with redis.Redis.from_url(url, socket_timeout=2.0) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise LabError(
            f"REDIS_URL={redact_url(url)} does not answer ({exc}): start that Redis, or unset "
            "REDIS_URL to let the lab start its own"
        ) from exc
