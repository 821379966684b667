"""Loading leads with their owner, tags and metadata: the article's N+1, before and after.

Before (``eager_loading`` off): one statement for the page of leads, then, while each lead is
serialized, one lazy load each for its owner, its tags and its metadata: 1 + 3N statements.

After (``eager_loading`` on): the loader options fetch everything up front. ``joined`` builds one
statement with LEFT OUTER JOINs; ``selectin`` runs the page query plus one ``IN (...)`` query per
relationship (4 statements, whatever N is). The JSON is the same either way.

The page's ``total`` rides along as ``count(*) OVER ()`` so the count costs no extra statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.interfaces import LoaderOption

from latency_lab.service.models import Lead, Tag


class LoaderStrategy(StrEnum):
    LAZY = "lazy"
    JOINED = "joined"
    SELECTIN = "selectin"


def choose_strategy(
    *, eager: bool, requested: LoaderStrategy | None, default: LoaderStrategy
) -> LoaderStrategy:
    """The ``eager_loading`` toggle, decided: lazy when off; when on, the strategy this request
    asked for (``X-Lab-Loader``), else the lab's default (``LAB_LOADER_STRATEGY``)."""
    if not eager:
        return LoaderStrategy.LAZY
    return requested or default


@dataclass(frozen=True)
class LeadQuery:
    limit: int = 100
    offset: int = 0
    status: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class LeadPage:
    leads: list[dict[str, Any]]
    total: int


def loader_options(strategy: LoaderStrategy) -> Sequence[LoaderOption]:
    """The whole fix for the N+1, in one place."""
    if strategy is LoaderStrategy.JOINED:
        return (joinedload(Lead.owner), joinedload(Lead.tags), joinedload(Lead.metadata_entries))
    if strategy is LoaderStrategy.SELECTIN:
        return (
            selectinload(Lead.owner),
            selectinload(Lead.tags),
            selectinload(Lead.metadata_entries),
        )
    return ()


def load_page(query: LeadQuery, *, session: Session, strategy: LoaderStrategy) -> LeadPage:
    stmt = _page_statement(query).options(*loader_options(strategy))
    rows = session.execute(stmt).unique().all()
    if not rows:
        return LeadPage(leads=[], total=_count(query, session=session) if query.offset else 0)
    return LeadPage(leads=[lead_json(lead) for lead, _ in rows], total=int(rows[0][1]))


def load_one(lead_id: int, *, session: Session, strategy: LoaderStrategy) -> dict[str, Any] | None:
    stmt = select(Lead).where(Lead.id == lead_id).options(*loader_options(strategy))
    lead = session.execute(stmt).unique().scalar_one_or_none()
    return lead_json(lead) if lead is not None else None


def _filtered(stmt: Select[Any], query: LeadQuery) -> Select[Any]:
    if query.status:
        stmt = stmt.where(Lead.status == query.status)
    if query.tag:
        stmt = stmt.where(Lead.tags.any(Tag.name == query.tag))
    return stmt


def _page_statement(query: LeadQuery) -> Select[Any]:
    stmt = select(Lead, func.count().over().label("total"))
    return _filtered(stmt, query).order_by(Lead.id).limit(query.limit).offset(query.offset)


def _count(query: LeadQuery, *, session: Session) -> int:
    return int(session.scalar(_filtered(select(func.count(Lead.id)), query)) or 0)


def lead_json(lead: Lead) -> dict[str, Any]:
    """Serialize a lead with its relationships; touching them is what triggers lazy loads."""
    owner = lead.owner
    return {
        "id": lead.id,
        "company": lead.company,
        "contact_name": lead.contact_name,
        "email": lead.email,
        "status": lead.status,
        "score": lead.score,
        "industry": lead.industry,
        "company_size": lead.company_size,
        "enriched_at": _iso(lead.enriched_at),
        "created_at": _iso(lead.created_at),
        "updated_at": _iso(lead.updated_at),
        "owner": None
        if owner is None
        else {
            "id": owner.id,
            "name": owner.name,
            "email": owner.email,
            "region": owner.region,
        },
        "tags": [tag.name for tag in lead.tags],
        "metadata": {entry.key: entry.value for entry in lead.metadata_entries},
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
