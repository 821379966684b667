"""Fixtures for the telemetry tests: trace stores (SQLite, PostgreSQL) and the sample app.

PostgreSQL: ``LAB_TEST_POSTGRES_URL``, else ``postgres@127.0.0.1:5432/test`` or
``root@127.0.0.1:5432/test`` (trust auth). The session gets its own database, dropped at the end,
and each test its own schema in it; the tests are skipped, with the reason, when none answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from sqlalchemy.engine import make_url

from latency_lab.telemetry.testing import SpanCapture
from tests.lab_fixtures import reachable_postgres
from tests.telemetry.sample_app import create_app


# --- trace stores ----------------------------------------------------------------------------
def _libpq(url: str) -> str:
    """A plain libpq URL (psycopg) from a SQLAlchemy one."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_store_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (SQLAlchemy URL), dropped afterwards."""
    base, reason = reachable_postgres()
    if base is None:
        pytest.skip(f"PostgreSQL unreachable (set LAB_TEST_POSTGRES_URL): {reason}")
    name = f"lab_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(base), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(base), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_store_url(postgres_store_database: str) -> Iterator[str]:
    """A store URL whose tables land in a schema of their own (``search_path``)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(postgres_store_database), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield (
        make_url(postgres_store_database)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(_libpq(postgres_store_database), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'traces.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same test on a SQLite file and on PostgreSQL (skipped when unreachable)."""
    fixture = "sqlite_store_url" if request.param == "sqlite" else "postgres_store_url"
    return str(request.getfixturevalue(fixture))


# --- the sample app --------------------------------------------------------------------------
@pytest.fixture
def library(spans: SpanCapture) -> Flask:
    """The sample library app, its engine and its requests traced into ``spans``."""
    app = create_app()
    spans.instrument_engine(app.extensions["library"]["engine"])
    spans.instrument_flask(app)
    return app


@pytest.fixture
def client(library: Flask) -> FlaskClient:
    return library.test_client()
