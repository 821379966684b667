"""Request bodies and query parameters, validated with pydantic; errors name the field."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from latency_lab.service.models import LeadStatus

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s.]{2,}$")
MAX_LIMIT = 500


def _no_nul(value: str) -> str:
    """PostgreSQL cannot store NUL in text (SQLite would), and no name or note needs one."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


NoNul = AfterValidator(_no_nul)
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120), NoNul
]
Company = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=60), NoNul]  # tags, metadata keys


class LeadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    company: Company
    contact_name: ShortText
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), NoNul]
    owner_id: int = Field(ge=1, le=2**31 - 1)
    status: LeadStatus = LeadStatus.NEW
    score: int = Field(0, ge=0, le=100)
    tags: list[Name] = Field(default_factory=list, max_length=20)
    metadata: dict[Name, Annotated[str, StringConstraints(max_length=200), NoNul]] = Field(
        default_factory=dict, max_length=20
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL.match(value):
            raise ValueError("not a valid email address")
        return value.lower()

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        return _as_status(value)


class LeadPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status: LeadStatus | None = None
    score: int | None = Field(None, ge=0, le=100)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        return _as_status(value)


class LeadListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10_000_000)
    status: LeadStatus | None = None
    tag: Name | None = None


def _as_status(value: Any) -> Any:
    """Strict mode takes enums only; accept their string values from JSON."""
    if isinstance(value, str) and value in {status.value for status in LeadStatus}:
        return LeadStatus(value)
    return value
