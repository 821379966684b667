"""Every loader answers the same JSON, to the character, at its own statement count.

``lazy``, ``joined`` and ``selectin`` build ORM objects that :func:`lead_json` serializes;
``rows`` serializes plain rows; ``json`` has the database write the document. A reader of the
API must not be able to tell them apart: list pages (limits, offsets, filters, past the end,
``total``) and single leads, on SQLite and PostgreSQL, including what a seeded data set lacks:
a soft-deleted owner, no tags, no metadata, NULLs, timestamps with and without microseconds,
and text that JSON must escape.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from latency_lab.core.toggles import EAGER_LOADERS
from latency_lab.service.db import build_engine, session_factory
from latency_lab.service.lead_loader import LoaderStrategy, load_one, load_page
from latency_lab.service.lead_page import LeadPage, LeadQuery
from latency_lab.service.models import Lead, LeadMetadata, Tag, User
from latency_lab.telemetry.testing import assert_queries

STRATEGIES = tuple(LoaderStrategy)
AWKWARD_TEXT = 'Zoë & "Quoted" \\ Co.\n\t日本 ☃ </script>'


def page_statements(strategy: LoaderStrategy, leads: int, query: LeadQuery) -> int:
    """What each loader costs for a page of ``leads`` leads (the lab's promise, per loader)."""
    if leads == 0:
        return 2 if query.offset else 1  # past the end, a count gives the total
    return {
        LoaderStrategy.LAZY: 1 + 3 * leads,  # the article's N+1: owner, tags, metadata per lead
        LoaderStrategy.JOINED: 1,
        LoaderStrategy.SELECTIN: 4,
        LoaderStrategy.ROWS: 3,
        LoaderStrategy.JSON: 1,
    }[strategy]


def lead_statements(strategy: LoaderStrategy, found: bool) -> int:
    if not found:
        return 1
    return {
        LoaderStrategy.LAZY: 4,
        LoaderStrategy.JOINED: 1,
        LoaderStrategy.SELECTIN: 4,
        LoaderStrategy.ROWS: 3,
        LoaderStrategy.JSON: 1,
    }[strategy]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = build_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def odd_leads(sessions: sessionmaker[Session]) -> list[int]:
    """Leads the seed does not make: their ids, in order."""
    with sessions() as session:
        gone = User(name="Former Rep", email="former@latencylab.example", region="emea",
                    deleted_at=datetime(2025, 2, 1))  # fmt: skip
        session.add(gone)
        session.flush()
        tags = list(session.scalars(select(Tag).order_by(Tag.id).limit(3)))
        odd = [
            Lead(  # a soft-deleted owner, no tags, no metadata, NULLs
                owner_id=gone.id, company="Nobody's", contact_name="N. N.",
                email="nn@example.com", status="lost", score=0,
                created_at=datetime(2025, 3, 1, 12, 0, 0), updated_at=datetime(2025, 3, 1, 12),
            ),
            Lead(  # microseconds, leading zeros in them, and text JSON must escape
                owner_id=1, company=AWKWARD_TEXT, contact_name="Ünïcödé O'Brien",
                email="zoe@example.com", status="won", score=100, industry="Ed\\Tech",
                company_size="1-10", enriched_at=datetime(2025, 3, 2, 8, 30, 15, 123456),
                created_at=datetime(2025, 3, 2, 8, 0, 0, 1),
                updated_at=datetime(2025, 3, 2, 9, 0, 0, 999999), tags=list(reversed(tags)),
                metadata_entries=[LeadMetadata(key="zeta", value=AWKWARD_TEXT),
                                  LeadMetadata(key="alpha", value="")],
            ),
        ]  # fmt: skip
        session.add_all(odd)
        session.commit()
        return [lead.id for lead in odd]


def _pages(query: LeadQuery, sessions: sessionmaker[Session]) -> dict[LoaderStrategy, LeadPage]:
    """The page from every loader, each run inside its statement budget."""
    with sessions() as session:
        leads = len(load_page(query, session=session, strategy=LoaderStrategy.JSON).leads)
    pages = {}
    for strategy in STRATEGIES:
        budget = page_statements(strategy, leads, query)
        with sessions() as session, assert_queries(budget):
            pages[strategy] = load_page(query, session=session, strategy=strategy)
    return pages


def _exactly(value: Any) -> Any:
    """``value`` with every object's key order made visible (dicts compare without it)."""
    if isinstance(value, dict):
        return [(key, _exactly(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_exactly(item) for item in value]
    return value


QUERIES = (
    LeadQuery(limit=1),
    LeadQuery(limit=25, offset=7),
    LeadQuery(limit=500),
    LeadQuery(limit=10, status="new"),
    LeadQuery(limit=10, offset=3, tag="hot"),
    LeadQuery(limit=50, status="won", tag="enterprise"),
    LeadQuery(limit=10, tag="no-such-tag"),  # empty, offset 0: total 0
    LeadQuery(limit=10, offset=100_000),  # past the end: the total still counts
    LeadQuery(limit=10, offset=100_000, status="lost"),
)


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: repr(q)[9:])
def test_every_loader_answers_the_same_page(
    query: LeadQuery, sessions: sessionmaker[Session], odd_leads: list[int]
) -> None:
    pages = _pages(query, sessions)

    reference = pages[LoaderStrategy.LAZY]
    for strategy, page in pages.items():
        assert page.total == reference.total, strategy
        assert _exactly(page.leads) == _exactly(reference.leads), strategy
    assert reference.total > 0 or query.tag == "no-such-tag"
    if query.offset == 100_000:
        assert reference.leads == [] and reference.total > 0


def test_the_odd_leads_come_out_the_same_from_every_loader(
    sessions: sessionmaker[Session], odd_leads: list[int]
) -> None:
    query = LeadQuery(limit=10, offset=odd_leads[0] - 3)
    pages = _pages(query, sessions)

    leads = {lead["id"]: lead for lead in pages[LoaderStrategy.LAZY].leads}
    nobodys, awkward = leads[odd_leads[0]], leads[odd_leads[1]]
    assert nobodys["owner"] is None and nobodys["tags"] == [] and nobodys["metadata"] == {}
    assert nobodys["industry"] is None and nobodys["enriched_at"] is None
    assert nobodys["created_at"] == "2025-03-01T12:00:00"
    assert awkward["company"] == AWKWARD_TEXT and awkward["industry"] == "Ed\\Tech"
    assert awkward["enriched_at"] == "2025-03-02T08:30:15.123456"
    assert awkward["created_at"] == "2025-03-02T08:00:00.000001"
    assert awkward["tags"] == sorted(awkward["tags"]) and len(awkward["tags"]) == 3
    assert list(awkward["metadata"].items()) == [("alpha", ""), ("zeta", AWKWARD_TEXT)]
    for strategy, page in pages.items():
        assert _exactly(page.leads) == _exactly(pages[LoaderStrategy.LAZY].leads), strategy


def test_every_loader_answers_the_same_single_lead(
    sessions: sessionmaker[Session], odd_leads: list[int]
) -> None:
    for lead_id in (1, *odd_leads, 2**31 - 1):
        documents = {}
        for strategy in STRATEGIES:
            found = lead_id != 2**31 - 1
            with sessions() as session, assert_queries(lead_statements(strategy, found)):
                documents[strategy] = load_one(lead_id, session=session, strategy=strategy)
        reference = documents[LoaderStrategy.LAZY]
        assert (reference is None) == (lead_id == 2**31 - 1)
        for strategy, document in documents.items():
            assert _exactly(document) == _exactly(reference), (lead_id, strategy)


def test_the_eager_loaders_are_the_ones_settings_and_headers_accept() -> None:
    assert [s.value for s in STRATEGIES if s is not LoaderStrategy.LAZY] == list(EAGER_LOADERS)
