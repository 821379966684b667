"""Seed the lead database: deterministic, idempotent, with a progress bar.

``seed_database(url, leads=5000, seed=42)`` creates the schema if needed and inserts users, tags,
leads, their tags and metadata in bulk. A ``lab_seed`` row records what was seeded: running it
again with the same arguments does nothing; different arguments need ``reset=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
    text,
)
from tqdm import tqdm

from latency_lab.seed.factories import LeadRow, build_lead, build_tag_names, build_users, seeded
from latency_lab.service.db import build_engine, create_schema
from latency_lab.service.models import Base, Lead, LeadMetadata, Tag, User, lead_tags

CHUNK = 500

_seed_meta = MetaData()
seed_table = Table(
    "lab_seed",
    _seed_meta,
    Column("id", Integer, primary_key=True),
    Column("description", String(200)),
)


class SeedConflict(RuntimeError):
    """The database holds a different data set; reseeding it would destroy rows."""


@dataclass(frozen=True)
class SeedReport:
    leads: int
    users: int
    tags: int
    created: bool
    description: str


def describe(*, leads: int, users: int, tags: int, seed: int) -> str:
    return f"leads={leads} users={users} tags={tags} seed={seed}"


def is_seeded(database_url: str) -> bool:
    engine = build_engine(database_url)
    try:
        return _current(engine) is not None
    finally:
        engine.dispose()


def seed_database(
    database_url: str,
    *,
    leads: int = 5000,
    users: int = 50,
    tags: int = 30,
    seed: int = 42,
    progress: bool = True,
    reset: bool = False,
) -> SeedReport:
    if leads < 0 or users < 1 or tags < 1:
        raise ValueError("need leads >= 0, users >= 1 and tags >= 1")
    wanted = describe(leads=leads, users=users, tags=tags, seed=seed)
    engine = build_engine(database_url)
    try:
        current = _current(engine)
        if current == wanted and not reset:
            return SeedReport(leads, users, tags, created=False, description=wanted)
        if current is None and not reset and _has_leads(engine):
            raise SeedConflict(
                "the database holds leads but no record of a finished seeding (a seeding was "
                "interrupted, or the data is someone else's): run `latency-lab seed --reset` "
                "to replace them"
            )
        if current is not None and not reset:
            raise SeedConflict(
                f"the database was seeded with {current}; run `latency-lab seed --reset` to "
                f"replace it with {wanted}"
            )
        if reset:
            Base.metadata.drop_all(engine)
            _seed_meta.drop_all(engine)
        create_schema(engine)
        _seed_meta.create_all(engine)
        _insert_all(engine, leads=leads, users=users, tags=tags, seed=seed, progress=progress)
        _advance_sequences(engine)
        with engine.begin() as conn:
            conn.execute(seed_table.delete())
            conn.execute(insert(seed_table).values(id=1, description=wanted))
        return SeedReport(leads, users, tags, created=True, description=wanted)
    finally:
        engine.dispose()


def _advance_sequences(engine: Engine) -> None:
    """Rows were inserted with explicit ids: move PostgreSQL's sequences past them."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for table in ("users", "tags", "leads"):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                )
            )


def _has_leads(engine: Engine) -> bool:
    if not inspect(engine).has_table("leads"):
        return False
    with engine.connect() as conn:
        return conn.execute(select(Lead.id).limit(1)).first() is not None


def _current(engine: Engine) -> str | None:
    if not inspect(engine).has_table("lab_seed"):
        return None
    with engine.connect() as conn:
        return conn.execute(select(seed_table.c.description)).scalar()


def _insert_all(
    engine: Engine, *, leads: int, users: int, tags: int, seed: int, progress: bool
) -> None:
    fake, rng = seeded(seed)
    with engine.begin() as conn:
        conn.execute(insert(User), [u.__dict__ for u in build_users(fake, rng, users)])
        conn.execute(
            insert(Tag),
            [{"id": i, "name": n} for i, n in enumerate(build_tag_names(tags), start=1)],
        )
    bar = tqdm(total=leads, unit="lead", desc="seeding", disable=not progress)
    try:
        for start in range(1, leads + 1, CHUNK):
            rows = [
                build_lead(fake, rng, i, users=users, tags=tags)
                for i in range(start, min(start + CHUNK, leads + 1))
            ]
            _insert_leads(engine, rows)
            bar.update(len(rows))
    finally:
        bar.close()


def _insert_leads(engine: Engine, rows: list[LeadRow]) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Lead),
            [
                {
                    "id": r.id,
                    "owner_id": r.owner_id,
                    "company": r.company,
                    "contact_name": r.contact_name,
                    "email": r.email,
                    "status": r.status,
                    "score": r.score,
                    "created_at": r.created_at,
                    "updated_at": r.created_at,
                }
                for r in rows
            ],
        )
        conn.execute(
            insert(lead_tags), [{"lead_id": r.id, "tag_id": t} for r in rows for t in r.tag_ids]
        )
        conn.execute(
            insert(LeadMetadata),
            [
                {"lead_id": r.id, "key": k, "value": val}
                for r in rows
                for k, val in r.metadata.items()
            ],
        )
