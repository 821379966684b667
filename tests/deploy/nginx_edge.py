"""deploy/nginx/lab-edge.conf run by a real nginx on loopback, in front of a local upstream.

The shipped file is used as is, with three lines pointed elsewhere: the upstream (compose's
``service:8001``), the listening address (compose's ``8000``, here a free loopback port) and the
cache directory. The main configuration around it mirrors the official image's ``nginx.conf``,
with every path in a temporary directory. nginx runs in the foreground as our child, in its own
session, and is stopped by its process id.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import crossplane

from tests.deploy.compose_file import NGINX_CONF
from tests.lab_fixtures import start_process, stop_process, wait_until_up

COMPOSE_UPSTREAM = "server service:8001;"
COMPOSE_LISTEN = "listen 8000;"
COMPOSE_CACHE_DIR = "/var/cache/nginx/lab-edge"

MAIN_CONF = """\
{user}worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log notice;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    keepalive_timeout 65;
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {workdir}/lab-edge.conf;
}}
"""


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def render(workdir: Path, *, upstream: str, port: int) -> Path:
    """Write the test's main config and the edge config beside it; return the main one."""
    text = NGINX_CONF.read_text()
    replacements = (
        (COMPOSE_UPSTREAM, f"server {upstream};"),
        (COMPOSE_LISTEN, f"listen 127.0.0.1:{port};"),
        (COMPOSE_CACHE_DIR, str(workdir / "cache")),
    )
    for old, new in replacements:
        assert text.count(old) == 1, f"{NGINX_CONF.name} should hold {old!r} exactly once"
        text = text.replace(old, new)
    (workdir / "lab-edge.conf").write_text(text)
    # nginx started by root hands its workers to `nobody`, who cannot write our temporary files.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = workdir / "nginx.conf"
    main.write_text(MAIN_CONF.format(user=user, workdir=workdir))
    return main


def check(binary: str, main: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the rendered configuration."""
    return subprocess.run(
        [binary, "-t", "-q", "-p", str(main.parent), "-c", str(main), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def running_nginx(binary: str, workdir: Path, *, upstream: str, port: int) -> Iterator[str]:
    """nginx serving the edge config on ``127.0.0.1:port``; yields its base URL."""
    main = render(workdir, upstream=upstream, port=port)
    log_file = workdir / "nginx.out"
    process = start_process(
        [binary, "-p", str(workdir), "-c", str(main), "-e", "stderr", "-g", "daemon off;"],
        env=dict(os.environ),
        log_file=log_file,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/edge/healthz", process, log_file, timeout_s=10)
        yield url
    finally:
        stop_process(process)


def parsed_config() -> list[dict[str, Any]]:
    """The shipped file's directives (crossplane's parse; the file is an http-level include)."""
    payload = crossplane.parse(str(NGINX_CONF), single=True, check_ctx=False, comments=False)
    errors = payload["errors"] or payload["config"][0]["errors"]
    assert not errors, errors
    directives: list[dict[str, Any]] = payload["config"][0]["parsed"]
    return directives


def find(directives: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Every directive called ``name``, at any depth."""
    found = []
    for directive in directives:
        if directive["directive"] == name:
            found.append(directive)
        found.extend(find(directive.get("block", []), name))
    return found
