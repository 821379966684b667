"""PostgreSQL for every test folder: one server, and a database or schema of its own per test.

The server is ``LAB_TEST_POSTGRES_URL``, else the first of ``root@127.0.0.1:5432/test`` and
``postgres@127.0.0.1:5432/test`` that answers (trust auth on CI machines). Tests that need one
are skipped, with the reason, when none answers. Everything created here is dropped afterwards.

* ``postgres_server`` (session): a :class:`PostgresServer`, which creates and drops databases
  (empty, or copies of a template) and schemas.
* ``empty_postgres``: makes empty databases for one test (``empty_postgres("lab")`` -> its URL),
  as a fresh production server has.
* ``postgres_store_database`` (session) and ``postgres_store_url``: trace stores, one database
  for the session and one schema per test (``search_path``).

The seeded lab databases (``postgres_template``, ``postgres_database``) are in
``tests.lab_fixtures``, built with the same server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from latency_lab.telemetry.database_url import normalize_url

# Where a PostgreSQL may answer (trust auth on CI machines); LAB_TEST_POSTGRES_URL replaces them.
POSTGRES_CANDIDATES = (
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
)


def reachable_postgres() -> tuple[str | None, str]:
    """The first PostgreSQL that answers (a SQLAlchemy URL), or None and why none did."""
    override = os.environ.get("LAB_TEST_POSTGRES_URL")
    errors = []
    for url in (override,) if override else POSTGRES_CANDIDATES:
        normalized = normalize_url(url).render_as_string(hide_password=False)
        try:
            with psycopg.connect(_libpq(normalized), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return normalized, ""
        except Exception as exc:  # any driver error: this candidate is not usable
            errors.append(f"{url}: {str(exc).strip().splitlines()[0]}")
    return None, "; ".join(errors)


@dataclass(frozen=True)
class PostgresServer:
    """Creates and drops the tests' databases and schemas on the server at ``admin_url``."""

    admin_url: str

    def url(self, database: str, *, schema: str | None = None) -> str:
        """A SQLAlchemy URL for ``database``; with ``schema``, tables land in that schema."""
        url = make_url(self.admin_url).set(database=database)
        if schema is not None:
            url = url.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def create_database(self, purpose: str, *, template: str | None = None) -> str:
        """A new database (a copy of ``template`` if given), named after ``purpose``."""
        name = _unique(f"lab_{purpose}")
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self._execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def create_schema(self, database: str) -> str:
        name = _unique("t")
        self._execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)), database)
        return name

    def drop_schema(self, database: str, name: str) -> None:
        self._execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)), database)

    def _execute(self, statement: sql.Composed, database: str | None = None) -> None:
        url = self.url(database) if database else self.admin_url
        with psycopg.connect(_libpq(url), autocommit=True, connect_timeout=3) as connection:
            connection.execute(statement)


def _libpq(url: str) -> str:
    """A plain libpq URL (psycopg) from a SQLAlchemy one."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    admin_url, reason = reachable_postgres()
    if admin_url is None:
        pytest.skip(f"PostgreSQL unreachable (set LAB_TEST_POSTGRES_URL): {reason}")
    return PostgresServer(admin_url)


@pytest.fixture
def empty_postgres(postgres_server: PostgresServer) -> Iterator[Callable[[str], str]]:
    """Makes empty databases (``empty_postgres("lab")`` -> its URL), dropped after the test."""
    created: list[str] = []

    def create(purpose: str) -> str:
        created.append(postgres_server.create_database(purpose))
        return postgres_server.url(created[-1])

    yield create
    for name in created:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def postgres_store_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database for this session's trace stores (its name), dropped after."""
    name = postgres_server.create_database("store")
    yield name
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_store_url(
    postgres_server: PostgresServer, postgres_store_database: str
) -> Iterator[str]:
    """A store URL whose tables land in a schema of their own (``search_path``)."""
    schema = postgres_server.create_schema(postgres_store_database)
    yield postgres_server.url(postgres_store_database, schema=schema)
    postgres_server.drop_schema(postgres_store_database, schema)
