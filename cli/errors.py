"""How the CLI fails: one line saying what is wrong, and the exit code that goes with it.

Mistakes in arguments or in ``LAB_*`` settings are usage errors (exit code 2); an unreachable lab
or a refused request is a plain failure (exit code 1, ``click.ClickException``).
"""

from __future__ import annotations

from typing import Any, NoReturn

import click
from pydantic import ValidationError

from latency_lab.core.settings import Settings


class ConfigurationError(click.ClickException):
    """Settings from the environment that do not validate: a usage error (exit code 2)."""

    exit_code = 2


def load_settings(**overrides: Any) -> Settings:
    """``Settings()`` from the environment (plus overrides), its errors turned into one line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {describe_settings_error(exc)}") from None


def describe_settings_error(exc: ValidationError) -> str:
    """``LAB_EDGE_PORT=99999: Input should be less than or equal to 65535``; several joined."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            name = _environment_name(str(error["loc"][0]))
            problems.append(f"{name}={error.get('input')}: {message.removeprefix(name + ' ')}")
        else:
            problems.append(message)
    return "; ".join(problems)


def _environment_name(field_or_alias: str) -> str:
    field = Settings.model_fields.get(field_or_alias)
    return field.alias if field is not None and field.alias else field_or_alias


def bad_argument(message: str) -> NoReturn:
    """A command-line argument the command cannot use: exit code 2, before anything runs."""
    raise click.UsageError(message)
