"""One typed settings object per process, read from the environment once.

Every process of the lab (service, edge, workers, third-party simulator, dashboard, CLI) builds a
:class:`Settings` at start-up and passes it down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from latency_lab.core.toggles import DEFAULT_LOADER, EAGER_LOADERS, loader_choices


class Settings(BaseSettings):
    """The lab's configuration. Environment names are given by each field's alias."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    var_dir: Path = Field(Path("var"), alias="LAB_VAR_DIR")
    database_url: str | None = Field(None, alias="LAB_DATABASE_URL")
    trace_store_url: str | None = Field(None, alias="LAB_TRACE_STORE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    admin_token: str | None = Field(None, alias="LAB_ADMIN_TOKEN")
    host: str = Field("127.0.0.1", alias="LAB_HOST")
    edge_port: int = Field(8000, alias="LAB_EDGE_PORT", ge=1, le=65535)
    service_port: int = Field(8001, alias="LAB_SERVICE_PORT", ge=1, le=65535)
    thirdparty_port: int = Field(8002, alias="LAB_THIRDPARTY_PORT", ge=1, le=65535)
    dashboard_port: int = Field(8501, alias="LAB_DASHBOARD_PORT", ge=1, le=65535)
    thirdparty_url: str | None = Field(None, alias="LAB_THIRDPARTY_URL")
    service_url: str | None = Field(None, alias="LAB_SERVICE_URL")
    # Where other processes reach the edge when it is not on LAB_HOST (compose: http://edge:8000).
    edge_base_url: str | None = Field(None, alias="LAB_EDGE_URL")
    service_workers: int = Field(4, alias="LAB_SERVICE_WORKERS", ge=1, le=64)
    rq_workers: int = Field(1, alias="LAB_RQ_WORKERS", ge=0, le=64)
    # Jobs each RQ worker process runs at once, on threads (they wait on the providers).
    rq_concurrency: int = Field(16, alias="LAB_RQ_CONCURRENCY", ge=1, le=256)
    redis_cache_ttl_s: int = Field(300, alias="LAB_REDIS_CACHE_TTL", ge=1)
    app_cache_ttl_s: int = Field(60, alias="LAB_APP_CACHE_TTL", ge=1)
    edge_max_age_s: int = Field(30, alias="LAB_EDGE_MAX_AGE", ge=0)
    loader_strategy: str = Field(DEFAULT_LOADER, alias="LAB_LOADER_STRATEGY")
    # Profile every Nth request of each service process (0: only those sending X-Lab-Profile).
    profile_every: int = Field(0, alias="LAB_PROFILE_EVERY", ge=0)
    max_body_bytes: int = Field(64 * 1024, alias="LAB_MAX_BODY_BYTES", ge=1024)
    trace_retention_hours: float = Field(24.0, alias="LAB_TRACE_RETENTION_HOURS", gt=0)
    trace_retention_max_spans: int = Field(
        2_000_000, alias="LAB_TRACE_RETENTION_MAX_SPANS", ge=1000
    )
    # Delivered outbox rows are deleted this long after delivery (failed and dropped ones stay).
    outbox_retention_hours: float = Field(24.0, alias="LAB_OUTBOX_RETENTION_HOURS", gt=0)

    @field_validator("loader_strategy")
    @classmethod
    def _known_loader(cls, value: str) -> str:
        if value not in EAGER_LOADERS:
            raise ValueError(f"LAB_LOADER_STRATEGY must be {loader_choices()}")
        return value

    @model_validator(mode="after")
    def _token_when_exposed(self) -> Settings:
        if not _is_loopback(self.host) and not self.admin_token:
            raise ValueError(
                f"LAB_HOST={self.host} exposes the lab beyond this machine: "
                "set LAB_ADMIN_TOKEN so the admin API is not open to everyone"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'lab.db').resolve()}"

    @property
    def resolved_trace_store_url(self) -> str:
        return self.trace_store_url or f"sqlite:///{(self.var_dir / 'traces.db').resolve()}"

    @property
    def resolved_thirdparty_url(self) -> str:
        return self.thirdparty_url or f"http://{self.host}:{self.thirdparty_port}"

    @property
    def resolved_service_url(self) -> str:
        return self.service_url or f"http://{self.host}:{self.service_port}"

    @property
    def edge_url(self) -> str:
        return self.edge_base_url or f"http://{self.host}:{self.edge_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    def telemetry_options(self) -> dict[str, Any]:
        """What ``telemetry.configure`` needs: where spans go and how long they stay."""
        return {
            "store_url": self.resolved_trace_store_url,
            "retention_max_age_s": self.trace_retention_hours * 3600,
            "retention_max_spans": self.trace_retention_max_spans,
        }

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_or_exit(process: str) -> Settings:
    """``Settings()`` for a process's entry point: invalid settings end it with one line, e.g.
    ``latency-lab worker: LAB_HOST=0.0.0.0 exposes the lab ...: set LAB_ADMIN_TOKEN ...``."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise SystemExit(f"latency-lab {process}: invalid settings: {problems}") from None
