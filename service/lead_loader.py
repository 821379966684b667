"""Loading leads with their owner, tags and metadata: the article's N+1, before and after.

Before (``eager_loading`` off): one statement for the page of leads, then, while each lead is
serialized, one lazy load each for its owner, its tags and its metadata: 1 + 3N statements.

After (``eager_loading`` on), one of four strategies, the same JSON from each:

* ``joined``, the article's fix: the loader options fetch everything up front in one statement
  with LEFT OUTER JOINs, one row per lead x tag x metadata entry, made unique again in Python.
* ``selectin``: the page, then one ``IN (...)`` query per relationship (4 statements).
* ``rows``: the same three reads as plain rows (Core), no ORM objects (3 statements): what is
  left once the ORM stops building objects.
* ``json`` (the default): the database builds each lead's document, one statement
  (:mod:`~latency_lab.service.lead_documents`): the ORM's cost, visible.

The page's ``total`` rides in the page's statement (:mod:`~latency_lab.service.lead_page`).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, and_, bindparam, select
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.interfaces import LoaderOption

from latency_lab.service import lead_documents
from latency_lab.service.lead_page import (
    Filters,
    LeadPage,
    LeadQuery,
    page_total,
    paged,
    total_column,
)
from latency_lab.service.models import Lead, LeadMetadata, Tag, User, lead_tags


class LoaderStrategy(StrEnum):
    """How leads are loaded: ``lazy``, or one of the eager loaders that settings and
    ``X-Lab-Loader`` accept (``core.toggles.EAGER_LOADERS``, kept equal by a test)."""

    LAZY = "lazy"
    JOINED = "joined"
    SELECTIN = "selectin"
    ROWS = "rows"
    JSON = "json"


def choose_strategy(
    *, eager: bool, requested: LoaderStrategy | None, default: LoaderStrategy
) -> LoaderStrategy:
    """The ``eager_loading`` toggle, decided: lazy when off; when on, the strategy this request
    asked for (``X-Lab-Loader``), else the lab's default (``LAB_LOADER_STRATEGY``)."""
    if not eager:
        return LoaderStrategy.LAZY
    return requested or default


def loader_options(strategy: LoaderStrategy) -> Sequence[LoaderOption]:
    """The whole fix for the N+1, in one place (for the ORM loaders)."""
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
    if strategy is LoaderStrategy.JSON:
        return lead_documents.load_page(query, session=session)
    if strategy is LoaderStrategy.ROWS:
        return _load_rows(query, session=session)
    result = session.execute(_page_statement(strategy, query.filters), query.parameters())
    rows = list(result.unique() if strategy is LoaderStrategy.JOINED else result)
    return LeadPage([lead_json(lead) for lead, _ in rows], page_total(rows, query, session=session))


def load_one(lead_id: int, *, session: Session, strategy: LoaderStrategy) -> dict[str, Any] | None:
    if strategy is LoaderStrategy.JSON:
        return lead_documents.load_one(lead_id, session=session)
    if strategy is LoaderStrategy.ROWS:
        rows = session.execute(_rows_one_statement(), {"lead_id": lead_id}).all()
        return next(iter(_documents(rows, session=session)), None)
    result = session.execute(_one_statement(strategy), {"lead_id": lead_id})
    lead = result.unique().scalar_one_or_none()
    return lead_json(lead) if lead is not None else None


# One statement per strategy and shape, reused (lead_page says why).
@functools.cache
def _page_statement(strategy: LoaderStrategy, filters: Filters) -> Select[Any]:
    stmt = paged(select(Lead, total_column(filters)), filters)
    return stmt.options(*loader_options(strategy))


@functools.cache
def _one_statement(strategy: LoaderStrategy) -> Select[Any]:
    stmt = select(Lead).where(Lead.id == bindparam("lead_id"))
    return stmt.options(*loader_options(strategy))


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


# --- rows: the ORM's reads, without the ORM's objects -----------------------------------------
# The page with its owner (a many-to-one: a LEFT OUTER JOIN adds no rows), then the page's tags
# and metadata, each in one IN (...) query, ordered as the relationships order them.
def _load_rows(query: LeadQuery, *, session: Session) -> LeadPage:
    rows = session.execute(_rows_page_statement(query.filters), query.parameters()).all()
    return LeadPage(_documents(rows, session=session), page_total(rows, query, session=session))


def _documents(rows: Sequence[Any], *, session: Session) -> list[dict[str, Any]]:
    if not rows:
        return []
    ids = {"ids": [row.id for row in rows]}
    tags: dict[int, list[str]] = defaultdict(list)
    for lead_id, name in session.execute(_tags_statement(), ids):
        tags[lead_id].append(name)
    metadata: dict[int, dict[str, str]] = defaultdict(dict)
    for lead_id, key, value in session.execute(_metadata_statement(), ids):
        metadata[lead_id][key] = value
    return [_row_json(row, tags[row.id], metadata[row.id]) for row in rows]


def _rows_select(*extra: Any) -> Select[Any]:
    owner = and_(User.id == Lead.owner_id, User.deleted_at.is_(None))  # as ``Lead.owner``
    columns = (
        *Lead.__table__.c,
        User.id.label("owner_user_id"),
        User.name.label("owner_name"),
        User.email.label("owner_email"),
        User.region.label("owner_region"),
    )
    return select(*columns, *extra).outerjoin(User, owner)


@functools.cache
def _rows_page_statement(filters: Filters) -> Select[Any]:
    return paged(_rows_select(total_column(filters)), filters)


@functools.cache
def _rows_one_statement() -> Select[Any]:
    return _rows_select().where(Lead.id == bindparam("lead_id"))


@functools.cache
def _tags_statement() -> Select[Any]:
    return (
        select(lead_tags.c.lead_id, Tag.name)
        .join(Tag, Tag.id == lead_tags.c.tag_id)
        .where(lead_tags.c.lead_id.in_(bindparam("ids", expanding=True)))
        .order_by(lead_tags.c.lead_id, Tag.name)
    )


@functools.cache
def _metadata_statement() -> Select[Any]:
    return (
        select(LeadMetadata.lead_id, LeadMetadata.key, LeadMetadata.value)
        .where(LeadMetadata.lead_id.in_(bindparam("ids", expanding=True)))
        .order_by(LeadMetadata.lead_id, LeadMetadata.key)
    )


def _row_json(row: Any, tags: list[str], metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "company": row.company,
        "contact_name": row.contact_name,
        "email": row.email,
        "status": row.status,
        "score": row.score,
        "industry": row.industry,
        "company_size": row.company_size,
        "enriched_at": _iso(row.enriched_at),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "owner": None
        if row.owner_user_id is None
        else {
            "id": row.owner_user_id,
            "name": row.owner_name,
            "email": row.owner_email,
            "region": row.owner_region,
        },
        "tags": tags,
        "metadata": metadata,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
