"""The simulated slow world around the service: a networked database and third-party providers.

Defaults reproduce the article. The database round trip is 0.8 ms per statement: a client and a
managed database in different availability zones of one region see 0.5-2 ms per round trip in
the public clouds (same-zone is 0.1-0.3 ms), and every statement, however small, pays it.
301 statements at 0.8 ms is ~240 ms of pure waiting before SQLite does any work. The read
path's blocking analytics call (mean 100 ms) is the third-party call on every request that the
article blames; a create also waits for email (80 ms) and enrichment (150 ms), the article's
"200-300 ms per request".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from latency_lab.telemetry.vocabulary import Provider


class WorldError(ValueError):
    """A world setting out of range or unknown; the message names the field."""


class ProviderWorld(BaseModel):
    """One third-party provider's behaviour."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: float = Field(100.0, ge=0, le=30_000, description="mean latency")
    jitter_ms: float = Field(20.0, ge=0, le=30_000, description="uniform jitter, +/-")
    failure_rate: float = Field(0.0, ge=0, le=1, description="share of calls answered with 503")


class World(BaseModel):
    """The whole simulated world: changeable at runtime through ``/admin/world``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    db_round_trip_ms: float = Field(
        0.8, ge=0, le=1000, description="injected per database statement (network round trip)"
    )
    email: ProviderWorld = ProviderWorld(latency_ms=80.0, jitter_ms=20.0)
    analytics: ProviderWorld = ProviderWorld(latency_ms=100.0, jitter_ms=25.0)
    enrichment: ProviderWorld = ProviderWorld(latency_ms=150.0, jitter_ms=40.0)
    third_party_timeout_s: float = Field(2.0, gt=0, le=60, description="inline call timeout")

    def provider(self, provider: Provider) -> ProviderWorld:
        result: ProviderWorld = getattr(self, provider.value)
        return result

    def flat(self) -> dict[str, float]:
        """Flattened settings for span attributes: ``db_round_trip_ms``, ``email.latency_ms``..."""
        out: dict[str, float] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": float(v) for k, v in value.items()})
            else:
                out[key] = float(value)
        return out

    @classmethod
    def from_json(cls, data: Any, *, base: World | None = None) -> World:
        """Validate a partial JSON object over ``base``; errors name the field and the rule."""
        if not isinstance(data, dict):
            raise WorldError("expected a JSON object of world settings")
        merged = (base or cls()).model_dump()
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merged[key] | value
            else:
                merged[key] = value
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise WorldError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
