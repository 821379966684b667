"""Run the whole lab on this machine: what ``latency-lab up`` does.

Start-up order, each step waiting for the one before to answer:

1. Redis: ``REDIS_URL`` when given, else a private ``redis-server`` on a free port
   (:class:`~service.redis_server.RedisServer`, working directory ``var/redis``);
2. the lead database, seeded once (skipped when it already holds a data set);
3. the third-party simulator; then the service (gunicorn), the RQ workers and the outbox relay
   (:mod:`service.relay`); then the edge and the dashboard.

Every child runs in its own session (process group) with its output in ``var/log/<name>.log``, and
learns where everything is from its environment (``REDIS_URL``, ``LAB_VAR_DIR``, ``LAB_HOST``, the
ports, ``LAB_THIRDPARTY_URL``, ``LAB_SERVICE_URL``). A child that dies, or does not answer its
readiness URL in time, stops the start-up with an error naming it and quoting its log.

If the lab's own Redis dies while the lab runs, it is started again, empty, on the same port:
the service, the workers and the outbox relay ride that out (docs/reliability.md).

Stopping sends SIGTERM to each process group (last started first), waits, then SIGKILLs whatever
is left, including descendants that left the group (RQ's work horses call ``setpgrp``). While it
runs, the lab describes itself in ``var/lab.json`` (URLs and PIDs), which other commands read and
``stop`` removes.

Usage::

    lab = Lab(Settings(), LabOptions(dashboard=False))
    exit_code = lab.run()  # blocks until Ctrl-C / SIGTERM (0) or a child dies (1)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import redis

from service.config import Settings
from service.redis_server import RedisServer, RedisUnavailable

READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.2
LAB_FILE_NAME = "lab.json"
LOG_TAIL_LINES = 25

Say = Callable[[str], None]


class LabError(RuntimeError):
    """The lab could not start, or a part of it died; the message names the part and says why."""


class StopRequested(BaseException):  # like KeyboardInterrupt: not an Exception
    """SIGINT or SIGTERM arrived: unwind whatever is starting, then stop everything."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- what to run -------------------------------------------------------------------------------
Probe = Callable[[int], bool]
"""Readiness check for one child, given its PID: True once it serves."""


class HttpProbe:
    """Ready when ``GET url`` answers 200."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, pid: int) -> bool:
        try:
            # trust_env=False: a proxy from HTTP_PROXY must not stand between us and our children
            return httpx.get(self.url, timeout=1.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def __repr__(self) -> str:
        return self.url


class RqWorkerProbe:
    """Ready when an RQ worker running as this child (or one of its descendants) has registered."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def __call__(self, pid: int) -> bool:
        from rq import Worker  # the CLI's other commands should not pay for importing rq

        pids = {pid} | {p.pid for p in _descendants(pid)}
        try:
            with redis.Redis.from_url(self.redis_url, socket_timeout=1.0) as client:
                return any(worker.pid in pids for worker in Worker.all(connection=client))
        except redis.RedisError:
            return False

    def __repr__(self) -> str:
        return f"RQ worker registration in {redact_url(self.redis_url)}"


@dataclass(frozen=True)
class ProcessSpec:
    """One child process: its name (and log file name), command line and readiness check."""

    name: str
    argv: tuple[str, ...]
    probe: Probe | None = None
    port: int | None = None


@dataclass(frozen=True)
class LabOptions:
    """Choices of ``latency-lab up`` that are not settings of the processes themselves."""

    dashboard: bool = True
    seed_leads: int = 5000
    ready_timeout_s: float = READY_TIMEOUT_S
    stop_grace_s: float = STOP_GRACE_S


def dashboard_script() -> Path:
    """The Streamlit app, next to the ``service`` package (checkout or site-packages)."""
    return Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def lab_tiers(settings: Settings, options: LabOptions, redis_url: str) -> list[list[ProcessSpec]]:
    """The lab's processes in start-up order: each tier needs the ones before it."""
    host = settings.host
    thirdparty = gunicorn_spec("thirdparty", "service.thirdparty:create_thirdparty_app()",
                           host=host, port=settings.thirdparty_port, threads=32, workers=1,
                           probe=HttpProbe(f"{_local_url(host, settings.thirdparty_port)}/healthz"))
    service = gunicorn_spec("service", "service.app:create_app()", host=host,
                        port=settings.service_port, threads=4, workers=settings.service_workers,
                        probe=HttpProbe(f"{_local_url(host, settings.service_port)}/healthz"))
    workers = [
        ProcessSpec(f"worker-{n}", (sys.executable, "-m", "service.worker"),
                    probe=RqWorkerProbe(redis_url))
        for n in range(1, settings.rq_workers + 1)
    ]
    relay = ProcessSpec("outbox-relay", (sys.executable, "-m", "service.relay"))
    edge = gunicorn_spec("edge", "service.edge:create_edge_app()", host=host,
                     port=settings.edge_port, threads=16, workers=1,
                     probe=HttpProbe(f"{_local_url(host, settings.edge_port)}/edge/healthz"))
    front = [edge]
    if options.dashboard and dashboard_script().is_file():
        front.append(_streamlit(settings))
    return [[thirdparty], [service, *workers, relay], front]


def gunicorn_spec(name: str, app: str, *, host: str, port: int, threads: int, workers: int,
              probe: Probe) -> ProcessSpec:
    argv = (
        sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", str(threads),
        "-w", str(workers), "-b", f"{_bind_host(host)}:{port}", *_no_control_socket(), app,
    )
    return ProcessSpec(name, argv, probe=probe, port=port)


def _no_control_socket() -> tuple[str, ...]:
    """Gunicorn >= 25.1 opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl):
    the lab's three servers, and every other lab, would take it from each other."""
    release = tuple(int(part) for part in version("gunicorn").split(".")[:2] if part.isdigit())
    return ("--no-control-socket",) if release >= (25, 1) else ()


def _streamlit(settings: Settings) -> ProcessSpec:
    argv = (
        sys.executable, "-m", "streamlit", "run", str(dashboard_script()),
        "--server.port", str(settings.dashboard_port), "--server.address", settings.host,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        # No "Deploy" button (not a thing here) and, as a second guard, no tracebacks on the page.
        "--client.toolbarMode", "minimal", "--client.showErrorDetails", "none",
    )
    probe = HttpProbe(f"{_local_url(settings.host, settings.dashboard_port)}/_stcore/health")
    return ProcessSpec("dashboard", argv, probe=probe, port=settings.dashboard_port)


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _local_url(host: str, port: int) -> str:
    """Where this machine reaches a server bound to ``host`` (all interfaces: via loopback)."""
    reachable = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, _bind_host(host))
    return f"http://{reachable}:{port}"


def child_environment(settings: Settings, redis_url: str,
                      base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every child gets: ours, plus where everything of this lab is."""
    env = dict(os.environ if base is None else base)
    env.update({
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
        "PYTHONUNBUFFERED": "1",  # so a log tail shows the last words of a dying child
    })
    return env


# --- running children --------------------------------------------------------------------------
@dataclass
class RunningProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    tier: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()


class Supervisor:
    """Starts children in their own sessions, watches them, and stops them with all descendants."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.running: list[RunningProcess] = []

    def spawn(self, spec: ProcessSpec, *, tier: int = 0) -> RunningProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )
        process = RunningProcess(spec, popen, log_path, tier)
        self.running.append(process)
        return process

    def wait_ready(self, processes: Iterable[RunningProcess], timeout_s: float) -> None:
        """Return once every process's probe passes; raise :class:`LabError` naming a laggard."""
        pending = [p for p in processes if p.spec.probe is not None]
        deadline = time.monotonic() + timeout_s
        while pending:
            for process in pending:
                if process.exit_code() is not None:
                    raise LabError(describe_exit(process, "during start-up"))
            pending = [p for p in pending if not _probe(p)]
            if pending and time.monotonic() > deadline:
                laggard = pending[0]
                raise LabError(
                    f"{laggard.spec.name} (pid {laggard.pid}) was not ready after {timeout_s:.0f} s"
                    f" (waiting for {laggard.spec.probe!r}).\n{log_excerpt(laggard.log_path)}"
                )
            if pending:
                time.sleep(POLL_INTERVAL_S)

    def first_exited(self) -> RunningProcess | None:
        return next((p for p in self.running if p.exit_code() is not None), None)

    def stop(self, grace_s: float = STOP_GRACE_S, hurry: threading.Event | None = None) -> None:
        """Stop every child, last tier first; nothing any of them started survives."""
        for tier in sorted({p.tier for p in self.running}, reverse=True):
            group = [p for p in self.running if p.tier == tier]
            terminate_trees([p.popen for p in group], grace_s=grace_s, hurry=hurry)
        self.running.clear()


def _probe(process: RunningProcess) -> bool:
    assert process.spec.probe is not None
    return process.spec.probe(process.pid)


def terminate_trees(popens: list[subprocess.Popen[bytes]], *, grace_s: float,
                    hurry: threading.Event | None = None) -> None:
    """SIGTERM each session leader's group, wait up to ``grace_s``, then SIGKILL what is left.

    Descendants are tracked throughout, so a process that moved to another group (an RQ work
    horse) is killed too if it outlives its parent's warm shutdown.
    """
    tracked: dict[int, psutil.Process] = {}
    _track(tracked, popens)
    for popen in popens:
        _signal_group(popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and not (hurry and hurry.is_set()):
        _track(tracked, popens)
        if not _alive(tracked.values()):
            break
        time.sleep(0.1)
    for popen in popens:
        _signal_group(popen.pid, signal.SIGKILL)
    for process in _alive(tracked.values()):
        with contextlib.suppress(psutil.Error):
            process.kill()
    for popen in popens:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
    psutil.wait_procs(_alive(tracked.values()), timeout=5)


def _track(tracked: dict[int, psutil.Process], popens: Iterable[subprocess.Popen[bytes]]) -> None:
    for popen in popens:
        try:
            root = psutil.Process(popen.pid)
        except psutil.NoSuchProcess:
            continue
        for process in [root, *_descendants(popen.pid)]:
            tracked.setdefault(process.pid, process)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def describe_exit(process: RunningProcess, when: str) -> str:
    code = process.exit_code()
    how = f"was killed by {signal.Signals(-code).name}" if code and code < 0 else f"exited ({code})"
    return f"{process.spec.name} (pid {process.pid}) {how} {when}.\n{log_excerpt(process.log_path)}"


def log_excerpt(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, indented, under a heading naming the file."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16_384))
            tail = log.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    if not tail:
        return f"({path} is empty)"
    return f"Last lines of {path}:\n" + "\n".join(f"    {line}" for line in tail)


# --- the lab description file ------------------------------------------------------------------
@dataclass(frozen=True)
class LabInfo:
    """What ``var/lab.json`` says about a running lab."""

    pid: int
    started_at: float
    urls: dict[str, str]
    processes: dict[str, int]
    log_dir: str
    owns_redis: bool = False

    def is_alive(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started_at) < 1.0
        except psutil.Error:
            return False


def lab_file(settings: Settings) -> Path:
    return settings.var_dir / LAB_FILE_NAME


def read_lab_info(settings: Settings) -> LabInfo | None:
    """The running lab's description, or None when there is none (or only a stale one)."""
    try:
        data = json.loads(lab_file(settings).read_text())
        info = LabInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
    return info if info.is_alive() else None


def _write_lab_info(path: Path, info: LabInfo) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(asdict(info), indent=2) + "\n")
    temporary.replace(path)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --- the lab -----------------------------------------------------------------------------------
def _print(message: str) -> None:
    print(message, flush=True)


def _print_error(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Lab:
    """The whole lab on this machine: ``run()`` starts it, serves until told, and stops it."""

    def __init__(self, settings: Settings, options: LabOptions | None = None, *,
                 say: Say = _print, warn: Say = _print_error) -> None:
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
        """Start, announce, serve until SIGINT/SIGTERM (exit 0) or a failure (exit 1)."""
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
            started = self.supervisor is not None or self.redis_server is not None
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
        self.redis_url = self._start_redis()
        self._seed()
        self.supervisor = Supervisor(settings.log_dir, child_environment(settings, self.redis_url))
        for number, tier in enumerate(lab_tiers(settings, self.options, self.redis_url)):
            self.say("starting " + ", ".join(spec.name for spec in tier) + "...")
            with self._shielded():
                started = [self.supervisor.spawn(spec, tier=number) for spec in tier]
            self.supervisor.wait_ready(started, self.options.ready_timeout_s)
        _write_lab_info(lab_file(settings), self.info())

    def _refuse_second_lab(self) -> None:
        running = read_lab_info(self.settings)
        if running is not None:
            raise LabError(
                f"a lab is already running from {self.settings.var_dir} (pid {running.pid}, "
                f"edge {running.urls.get('edge')}): stop it first (Ctrl-C in its terminal, or "
                f"`kill -INT {running.pid}`), or use another LAB_VAR_DIR"
            )
        lab_file(self.settings).unlink(missing_ok=True)  # a stale file from a killed lab

    def _start_redis(self) -> str:
        if self.settings.redis_url:
            _check_redis(self.settings.redis_url)
            return self.settings.redis_url
        self.say("starting Redis...")
        server = RedisServer(workdir=self.settings.var_dir / "redis",
                             log_file=self.settings.log_dir / "redis.log")
        self.redis_server = server
        try:
            with self._shielded():
                server.start()
        except RedisUnavailable as exc:
            raise LabError(f"could not start Redis: {exc}") from exc
        return server.url

    def _seed(self) -> None:
        from seed.seeding import is_seeded, seed_database  # heavy: SQLAlchemy, Faker

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
        processes = {p.spec.name: p.pid for p in self.supervisor.running} if self.supervisor else {}
        if "dashboard" in processes:
            urls["dashboard"] = settings.dashboard_url
        if self.redis_server is not None and self.redis_server.process is not None:
            processes["redis"] = self.redis_server.process.pid
        return LabInfo(pid=os.getpid(), started_at=psutil.Process().create_time(), urls=urls,
                       processes=processes, log_dir=str(settings.log_dir),
                       owns_redis=self.redis_server is not None)

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
        """Block while everything runs; return what died (signals interrupt with StopRequested)."""
        assert self.supervisor is not None
        while True:
            failed = self.supervisor.first_exited()
            if failed is not None:
                return describe_exit(failed, "while the lab was running")
            server = self.redis_server
            if server is not None and server.process is not None \
                    and server.process.poll() is not None:
                failure = self._restart_redis(server)
                if failure:
                    return failure
            time.sleep(0.5)

    def _restart_redis(self, server: RedisServer) -> str | None:
        """Our Redis died: start it again, empty, on the same port (the lab rides it out: see
        docs/reliability.md). Returns why not, when it cannot be restarted."""
        assert server.process is not None
        died = f"Redis (pid {server.process.pid}) exited ({server.process.returncode})"
        self.warn(f"{died}; starting it again on port {server.port}, empty")
        try:
            with self._shielded():
                server.start()
        except RedisUnavailable as exc:
            return f"{died} and could not be started again: {exc}"
        _write_lab_info(lab_file(self.settings), self.info())
        return None

    # --- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every child and our Redis; safe to call at any point, and more than once."""
        if self.supervisor is not None:
            self.supervisor.stop(self.options.stop_grace_s, hurry=self._hurry)
        if self.redis_server is not None:
            self.redis_server.stop()
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


def check_ports_free(host: str, specs: Iterable[ProcessSpec]) -> None:
    """Fail early, naming the process and its setting, when a port is taken or given twice."""
    seen: dict[int, str] = {}
    for spec in specs:
        if spec.port is None:
            continue
        if spec.port in seen:
            raise LabError(f"{_port_setting(spec.name)} and {_port_setting(seen[spec.port])} are "
                           f"both {spec.port}: give each process its own port")
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
