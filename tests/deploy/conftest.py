"""Fixtures for the production-shaped tests: empty PostgreSQL databases, as a fresh server has.

PostgreSQL is the one ``tests.lab_fixtures.reachable_postgres`` finds (``LAB_TEST_POSTGRES_URL``,
else the CI machine's server at 127.0.0.1:5432); tests that need it are skipped, with the reason,
when none answers. Each database is created empty and dropped after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.lab_fixtures import reachable_postgres


def _admin(url: str, statement: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url, reason = reachable_postgres()
    if url is None:
        pytest.skip(f"PostgreSQL unreachable (set LAB_TEST_POSTGRES_URL): {reason}")
    return url


@pytest.fixture
def empty_postgres(postgres_admin_url: str) -> Iterator[Callable[[str], str]]:
    """Makes empty databases (``empty_postgres("lab")`` -> its URL), dropped after the test."""
    created: list[str] = []

    def create(purpose: str) -> str:
        name = f"lab_{purpose}_{uuid.uuid4().hex[:10]}"
        _admin(postgres_admin_url, f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)

    yield create
    for name in created:
        _admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
