"""docker-compose.yml as Compose reads it: YAML (with merge keys), then ``${VAR}`` interpolation.

Compose itself is not needed: :func:`load_compose` interpolates the subset of Compose's syntax the
file uses (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
``${VAR?error}``, ``$$``) from an env file such as ``.env.example``, and raises
:class:`MissingVariable` as ``docker compose`` refuses to start when a required one is unset.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

CHECKOUT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = CHECKOUT / "docker-compose.yml"
ENV_EXAMPLE = CHECKOUT / ".env.example"
NGINX_CONF = CHECKOUT / "deploy" / "nginx" / "lab-edge.conf"
DOCKERFILE = CHECKOUT / "Dockerfile"
DOCKERIGNORE = CHECKOUT / ".dockerignore"

# ``$$`` (a literal dollar), or ``${NAME}`` with an optional ``:-``, ``-``, ``:?`` or ``?`` part.
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset (or empty): Compose refuses the file."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` (YAML data) with every string interpolated from ``env``."""
    if isinstance(value, str):
        return _REFERENCE.sub(lambda match: _resolve(match, env), value)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


def _resolve(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match.group("escaped"):
        return "$"
    name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
    value = env.get(name)
    missing = value is None or (op is not None and op.startswith(":") and value == "")
    if op in (":?", "?") and missing:
        raise MissingVariable(name, arg)
    if op in (":-", "-") and missing:
        return arg
    return value or ""


def variables(text: str) -> dict[str, str | None]:
    """Every variable the text refers to, with its operator (``:?`` marks a required one)."""
    return {m.group("name"): m.group("op") for m in _REFERENCE.finditer(text) if m.group("name")}


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    return {key: value or "" for key, value in dotenv_values(path).items()}


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose model after interpolation (from ``.env.example`` unless ``env`` is given)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    model: dict[str, Any] = interpolate(raw, read_env_file() if env is None else env)
    return model


def raw_compose() -> dict[str, Any]:
    model: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return model


# --- what the services run -----------------------------------------------------------------------
def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


@dataclass(frozen=True)
class Listener:
    """Where a compose service accepts connections inside the compose network."""

    service: str
    port: int


# Ports fixed by the images (the lab's own processes say theirs on their command line).
IMAGE_PORTS = {"postgres": 5432, "redis": 6379}


def listening_port(name: str, service: Mapping[str, Any]) -> int | None:
    """The port ``name`` serves on: from its command line, its image, or its nginx config."""
    command = command_of(service)
    for argument in command:
        for prefix in ("--bind=", "--server.port="):
            if argument.startswith(prefix):
                return int(argument.removeprefix(prefix).rsplit(":", 1)[-1])
        match = re.fullmatch(r"--set=receivers\.otlp\.protocols\.http\.endpoint=.*:(\d+)", argument)
        if match:
            return int(match.group(1))
    if str(service.get("image", "")).startswith("nginx"):
        match = re.search(r"^\s*listen\s+(\d+)\s*;", NGINX_CONF.read_text(), re.MULTILINE)
        return int(match.group(1)) if match else None
    return IMAGE_PORTS.get(name)
