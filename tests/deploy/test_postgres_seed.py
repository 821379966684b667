"""Seeding a fresh PostgreSQL database, as docker-compose.yml's one-shot `seed` service does.

The lab has no migrations: ``latency-lab seed`` (and the service at start-up) create the schema
with ``create_all``. On an empty database the console script must create every table, seed, move
the id sequences past the seeded rows, and on a second run do nothing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from latency_lab.seed.seeding import seed_table
from latency_lab.service.models import Base
from tests.lab_fixtures import process_env

pytestmark = pytest.mark.postgres

LEADS, USERS, TAGS = 40, 8, 6
CONSOLE_SCRIPT = Path(sys.executable).with_name("latency-lab")


def _seed(url: str, tmp_path: Path, leads: int = LEADS) -> subprocess.CompletedProcess[str]:
    """`latency-lab seed` as the compose job runs it (with a smaller data set)."""
    return subprocess.run(
        [
            str(CONSOLE_SCRIPT),
            "seed",
            "--leads",
            str(leads),
            "--users",
            str(USERS),
            "--tags",
            str(TAGS),
            "--no-progress",
        ],
        env=process_env(LAB_DATABASE_URL=url, LAB_VAR_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_seeding_a_fresh_database_creates_everything_once_and_keeps_it(
    empty_postgres: Callable[[str], str], tmp_path: Path
) -> None:
    url = empty_postgres("seed")

    first = _seed(url, tmp_path)
    second = _seed(url, tmp_path)
    other = _seed(url, tmp_path, leads=LEADS + 1)  # another data set: refused, nothing touched

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"seeded: {LEADS} leads, {USERS} users, {TAGS} tags")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("already seeded, nothing to do")
    assert other.returncode == 1 and "--reset" in other.stderr
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) | {seed_table.name} <= tables
        with engine.connect() as connection:
            counts = {
                t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("leads", "users", "tags")
            }
            # New rows get ids after the seeded ones (the seed inserts explicit ids).
            next_ids = {
                t: connection.execute(
                    text(f"SELECT nextval(pg_get_serial_sequence('{t}', 'id'))")
                ).scalar()
                for t in ("leads", "users", "tags")
            }
    finally:
        engine.dispose()
    assert counts == {"leads": LEADS, "users": USERS, "tags": TAGS}
    assert next_ids == {"leads": LEADS + 1, "users": USERS + 1, "tags": TAGS + 1}
