"""Seeding: deterministic, idempotent, realistic, and never silently destructive."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from latency_lab.seed.seeding import SeedConflict, seed_database
from latency_lab.service.models import Lead, LeadMetadata, User, lead_tags
from latency_lab.service.schemas import EMAIL


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _dump(url: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [
            tuple(r)
            for table in ("users", "tags", "leads", "lead_tags", "lead_metadata")
            for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))
        ]
    engine.dispose()
    return rows


def test_same_seed_same_rows_other_seed_other_rows(tmp_path: Path) -> None:
    first, second, other = (_url(tmp_path / name) for name in ("a.db", "b.db", "c.db"))
    for url, seed in ((first, 1), (second, 1), (other, 2)):
        seed_database(url, leads=200, seed=seed, progress=False)

    assert _dump(first) == _dump(second)
    assert _dump(first) != _dump(other)


def test_running_twice_changes_nothing(tmp_path: Path) -> None:
    url = _url(tmp_path / "lab.db")

    created = seed_database(url, leads=100, progress=False)
    again = seed_database(url, leads=100, progress=False)

    assert created.created and not again.created
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Lead)) == 100
    engine.dispose()


def test_rows_look_real_and_follow_the_shape_asked_for(tmp_path: Path) -> None:
    url = _url(tmp_path / "lab.db")
    seed_database(url, leads=300, users=50, tags=30, progress=False)
    engine = create_engine(url)
    with engine.connect() as conn:
        leads = conn.execute(select(Lead.email, Lead.company, Lead.score, Lead.owner_id)).all()
        tags_per_lead = conn.execute(
            select(func.count()).select_from(lead_tags).group_by(lead_tags.c.lead_id)
        ).scalars()
        metadata_per_lead = conn.execute(
            select(func.count()).select_from(LeadMetadata).group_by(LeadMetadata.lead_id)
        ).scalars()
        users = conn.scalar(select(func.count()).select_from(User))
        tag_counts, metadata_counts = set(tags_per_lead), set(metadata_per_lead)
    engine.dispose()

    assert users == 50
    assert all(EMAIL.match(email) for email, *_ in leads)
    assert len({company for _, company, *_ in leads}) > 250  # Faker companies, not "Company 1"
    assert all(0 <= score <= 100 and 1 <= owner <= 50 for *_, score, owner in leads)
    assert tag_counts <= {1, 2, 3, 4} and len(tag_counts) > 1
    assert metadata_counts <= {3, 4, 5, 6} and len(metadata_counts) > 1


def test_a_different_data_set_needs_reset(tmp_path: Path) -> None:
    url = _url(tmp_path / "lab.db")
    seed_database(url, leads=50, progress=False)

    with pytest.raises(SeedConflict, match="--reset"):
        seed_database(url, leads=80, progress=False)
    replaced = seed_database(url, leads=80, progress=False, reset=True)

    assert replaced.created and replaced.leads == 80


def test_an_interrupted_seeding_is_not_mistaken_for_a_finished_one(tmp_path: Path) -> None:
    url = _url(tmp_path / "lab.db")
    seed_database(url, leads=50, progress=False)
    engine = create_engine(url)
    with engine.begin() as conn:  # as if seeding died before recording that it finished
        conn.execute(text("DELETE FROM lab_seed"))
    engine.dispose()

    with pytest.raises(SeedConflict, match="interrupted"):
        seed_database(url, leads=50, progress=False)
    assert seed_database(url, leads=50, progress=False, reset=True).created
