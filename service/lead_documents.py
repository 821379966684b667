"""The ``json`` loader: the database builds each lead's JSON document, in one statement.

The ORM loaders fetch rows, build objects from them, and Python turns the objects into
dictionaries; profiles of ``GET /api/leads?limit=100`` put most of the request there
(SQLAlchemy and the driver, not the database). Here the database does that work where the data
is: one ``SELECT`` whose every row is a lead's finished document, owner, tags and metadata
embedded by correlated subqueries::

    SELECT json_object('id', leads.id, ...,
                       'owner', (SELECT json_object(...) FROM users WHERE ...),
                       'tags', (SELECT json_group_array(name) FROM (... ORDER BY name)),
                       'metadata', (SELECT json_group_object(key, value) FROM (... ORDER BY key))),
           (SELECT count(*) FROM leads WHERE ...)
    FROM leads WHERE ... ORDER BY leads.id LIMIT ? OFFSET ?

The ORM's cost, visible: same document, same statement count as the article's single JOIN,
a fraction of the time. SQLite and PostgreSQL spell the JSON functions differently; the small
SQL constructs below compile to each one's spelling (``sqlalchemy.ext.compiler``), so the
statement itself is written once. The documents equal :func:`~.lead_loader.lead_json`'s, to the
character of every timestamp (``tests/service/test_loader_equivalence.py``).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    ColumnExpressionArgument,
    Select,
    bindparam,
    literal_column,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from latency_lab.service.lead_page import (
    Filters,
    LeadPage,
    LeadQuery,
    page_total,
    paged,
    total_column,
)
from latency_lab.service.models import Lead, LeadMetadata, Tag, User, lead_tags


def load_page(query: LeadQuery, *, session: Session) -> LeadPage:
    rows = session.execute(_page_statement(query.filters), query.parameters()).all()
    return LeadPage([row[0] for row in rows], page_total(rows, query, session=session))


def load_one(lead_id: int, *, session: Session) -> dict[str, Any] | None:
    document: dict[str, Any] | None = session.scalar(_one_statement(), {"lead_id": lead_id})
    return document


@functools.cache  # one statement per shape, reused (lead_page says why)
def _page_statement(filters: Filters) -> Select[Any]:
    return paged(select(lead_document(), total_column(filters)), filters)


@functools.cache
def _one_statement() -> Select[Any]:
    return select(lead_document()).where(Lead.id == bindparam("lead_id"))


@functools.cache
def lead_document() -> ColumnElement[Any]:
    """A lead's JSON document, as one SQL expression over the ``leads`` row (built once)."""
    return json_object.of(
        id=Lead.id,
        company=Lead.company,
        contact_name=Lead.contact_name,
        email=Lead.email,
        status=Lead.status,
        score=Lead.score,
        industry=Lead.industry,
        company_size=Lead.company_size,
        enriched_at=iso_timestamp(Lead.enriched_at),
        created_at=iso_timestamp(Lead.created_at),
        updated_at=iso_timestamp(Lead.updated_at),
        owner=_owner(),
        tags=_tag_names(),
        metadata=_metadata(),
    )


def _owner() -> ColumnElement[Any]:
    """The owner's document, or NULL (no owner, or a soft-deleted one, as ``Lead.owner``)."""
    owner = json_object.of(id=User.id, name=User.name, email=User.email, region=User.region)
    found = select(owner).where(User.id == Lead.owner_id, User.deleted_at.is_(None))
    return json_nested(found.correlate(Lead).scalar_subquery())


def _tag_names() -> ColumnElement[Any]:
    """The lead's tag names, by name (``Lead.tags``'s order)."""
    names = (
        select(Tag.name)
        .join(lead_tags, lead_tags.c.tag_id == Tag.id)
        .where(lead_tags.c.lead_id == Lead.id)
        .order_by(Tag.name)
        .correlate(Lead)  # two levels down: name the row it belongs to
        .subquery()
    )
    return json_nested(select(json_array_agg(names.c.name)).scalar_subquery())


def _metadata() -> ColumnElement[Any]:
    """The lead's metadata as one object, keys in order (``Lead.metadata_entries``'s order)."""
    entries = (
        select(LeadMetadata.key, LeadMetadata.value)
        .where(LeadMetadata.lead_id == Lead.id)
        .order_by(LeadMetadata.key)
        .correlate(Lead)
        .subquery()
    )
    pairs = json_object_agg(entries.c.key, entries.c.value)
    return json_nested(select(pairs).scalar_subquery())


# --- the JSON functions, in each database's spelling ------------------------------------------
# Aggregates are fed from a subquery ordered as the ORM orders the relationship: SQLite (before
# 3.44) has no ORDER BY inside an aggregate and keeps its input's order; PostgreSQL does not
# promise to, so it is given ORDER BY inside the aggregate as well.


class json_object(FunctionElement[Any]):  # named as the SQL it stands for
    """``json_object('key', value, ...)``; PostgreSQL: ``json_build_object``."""

    type = JSON()
    inherit_cache = True

    @classmethod
    def of(cls, **fields: ColumnExpressionArgument[Any]) -> json_object:
        pairs: list[ColumnExpressionArgument[Any]] = []
        for key, value in fields.items():  # keys are our identifiers: safe as SQL literals
            pairs += [literal_column(f"'{key}'"), value]
        return cls(*pairs)


class iso_timestamp(FunctionElement[str]):
    """A DATETIME as Python's ``datetime.isoformat()`` writes it (what the ORM loaders send):
    ``2025-01-15T10:30:00``, and ``.ffffff`` only when there are microseconds. NULL stays NULL.
    """

    inherit_cache = True


class json_array_agg(FunctionElement[Any]):
    """The rows' values as a JSON array, ``[]`` for none, in the order given."""

    inherit_cache = True


class json_object_agg(FunctionElement[Any]):
    """The rows' ``(key, value)`` pairs as a JSON object, ``{}`` for none, keys in order."""

    inherit_cache = True


class json_nested(FunctionElement[Any]):
    """A subquery's JSON embedded as JSON, not as a string (SQLite marks JSON values with a
    subtype that a subquery's result need not keep: ``json(...)`` marks it again)."""

    inherit_cache = True


def _args(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> list[str]:
    return [compiler.process(clause, **kw) for clause in element.clauses]


@compiles(json_object)
def _json_object(element: json_object, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_object({', '.join(_args(element, compiler, **kw))})"


@compiles(json_object, "postgresql")
def _json_object_pg(element: json_object, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_build_object({', '.join(_args(element, compiler, **kw))})"


# Both write 'YYYY-MM-DDTHH:MM:SS.ffffff' and drop a '.000000' (the only '.' in the text).
@compiles(iso_timestamp)
def _iso_timestamp(element: iso_timestamp, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy stores SQLite DATETIMEs as text: 'YYYY-MM-DD HH:MM:SS.ffffff'
    (ts,) = _args(element, compiler, **kw)
    return f"replace(replace({ts}, ' ', 'T'), '.000000', '')"


@compiles(iso_timestamp, "postgresql")
def _iso_timestamp_pg(element: iso_timestamp, compiler: SQLCompiler, **kw: Any) -> str:
    (ts,) = _args(element, compiler, **kw)
    return f"""replace(to_char({ts}, 'YYYY-MM-DD"T"HH24:MI:SS.US'), '.000000', '')"""


@compiles(json_array_agg)
def _json_array_agg(element: json_array_agg, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = _args(element, compiler, **kw)
    return f"json_group_array({value})"


@compiles(json_array_agg, "postgresql")
def _json_array_agg_pg(element: json_array_agg, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = _args(element, compiler, **kw)
    return f"coalesce(json_agg({value} ORDER BY {value}), '[]'::json)"


@compiles(json_object_agg)
def _json_object_agg(element: json_object_agg, compiler: SQLCompiler, **kw: Any) -> str:
    key, value = _args(element, compiler, **kw)
    return f"json_group_object({key}, {value})"


@compiles(json_object_agg, "postgresql")
def _json_object_agg_pg(element: json_object_agg, compiler: SQLCompiler, **kw: Any) -> str:
    key, value = _args(element, compiler, **kw)
    return f"coalesce(json_object_agg({key}, {value} ORDER BY {key}), '{{}}'::json)"


@compiles(json_nested)
def _json_nested(element: json_nested, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = _args(element, compiler, **kw)
    return f"json({value})"


@compiles(json_nested, "postgresql")
def _json_nested_pg(element: json_nested, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = _args(element, compiler, **kw)
    return value
