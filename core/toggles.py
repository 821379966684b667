"""The five toggles: what each optimization is called, and how a request learns its setting.

All off is the article's "before". The live state is shared by every process through Redis
(:mod:`latency_lab.core.shared_state`); a request may override it with ``X-Lab-Toggles`` (from
loopback or with the admin token), which is how tests and side-by-side benchmarks pin a
configuration.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

TOGGLE_HEADER = "X-Lab-Toggles"
# Response header: the configuration that produced the response (what an HTTP cache in front,
# such as the nginx edge, reads to tell "edge cache off" from "not cacheable").
CONFIG_HEADER = "X-Lab-Config"
# Picks the eager loader for one request; same access rule as the toggles.
LOADER_HEADER = "X-Lab-Loader"
# The eager loaders (service.lead_loader.LoaderStrategy), from the article's single JOIN to the
# database building the JSON: what LAB_LOADER_STRATEGY and X-Lab-Loader accept.
EAGER_LOADERS = ("joined", "selectin", "rows", "json")
DEFAULT_LOADER = "json"  # the fastest on SQLite and PostgreSQL (README, "Performance")
# ``on`` profiles this request (and its jobs) with the sampling profiler; same access rule.
PROFILE_HEADER = "X-Lab-Profile"


class Toggle(StrEnum):
    EAGER_LOADING = "eager_loading"
    REDIS_CACHE = "redis_cache"
    APP_CACHE = "app_cache"
    EDGE_CACHE = "edge_cache"
    ASYNC_OFFLOAD = "async_offload"


# The article's order, used by the guided tour and the bench's cumulative runs.
ARTICLE_ORDER = (
    Toggle.EAGER_LOADING,
    Toggle.ASYNC_OFFLOAD,
    Toggle.REDIS_CACHE,
    Toggle.APP_CACHE,
    Toggle.EDGE_CACHE,
)


class ToggleError(ValueError):
    """A toggle name or value the lab does not know; the message says which and what is allowed."""


class Toggles(BaseModel):
    """One configuration of the five optimizations. Immutable; ``replace`` makes a changed copy."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    eager_loading: bool = False
    redis_cache: bool = False
    app_cache: bool = False
    edge_cache: bool = False
    async_offload: bool = False

    @classmethod
    def all_on(cls) -> Toggles:
        return cls(**{t.value: True for t in Toggle})

    def enabled(self, toggle: Toggle) -> bool:
        return bool(getattr(self, toggle.value))

    def replace(self, **changes: bool) -> Toggles:
        return self.model_copy(update=changes)

    def label(self) -> str:
        """Canonical configuration string, e.g. ``eager_loading=on,redis_cache=off,...``."""
        return ",".join(f"{t.value}={'on' if self.enabled(t) else 'off'}" for t in Toggle)

    def short_label(self) -> str:
        on = [t.value for t in Toggle if self.enabled(t)]
        if not on:
            return "all off"
        if len(on) == len(Toggle):
            return "all on"
        return "+".join(on)

    @classmethod
    def from_json(cls, data: Any, *, base: Toggles | None = None) -> Toggles:
        """Validate a JSON object of ``{name: bool}``; names not given keep ``base``'s value."""
        if not isinstance(data, dict):
            raise ToggleError("expected a JSON object of toggle names to true/false")
        unknown = sorted(set(data) - {t.value for t in Toggle})
        if unknown:
            raise ToggleError(f"unknown toggle(s) {', '.join(unknown)}; known: {_known()}")
        for name, value in data.items():
            if not isinstance(value, bool):
                raise ToggleError(f"toggle {name!r} must be true or false, got {value!r}")
        merged = (base or cls()).model_dump() | data
        try:
            return cls(**merged)
        except ValidationError as exc:  # pragma: no cover - guarded above
            raise ToggleError(str(exc)) from exc

    @classmethod
    def parse_override(cls, header: str, *, base: Toggles) -> Toggles:
        """Parse ``eager_loading=on,redis_cache=off`` (on/off, true/false, 1/0) over ``base``."""
        changes: dict[str, bool] = {}
        for part in filter(None, (p.strip() for p in header.split(","))):
            name, sep, raw = part.partition("=")
            name = name.strip()
            if not sep:
                raise ToggleError(f"{TOGGLE_HEADER}: expected name=on|off, got {part!r}")
            changes[name] = _parse_switch(name, raw.strip())
        return cls.from_json(changes, base=base)


def _parse_switch(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise ToggleError(f"toggle {name!r}: value must be on or off, got {raw!r}")


def _known() -> str:
    return ", ".join(t.value for t in Toggle)


def loader_choices() -> str:
    """``joined, selectin, rows or json``: for error messages."""
    return f"{', '.join(EAGER_LOADERS[:-1])} or {EAGER_LOADERS[-1]}"
