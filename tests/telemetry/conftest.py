"""Fixtures for the telemetry tests: trace stores (SQLite, PostgreSQL) and the sample app.

PostgreSQL stores come from ``tests.postgres`` (``postgres_store_url``): the session gets its own
database, dropped at the end, and each test its own schema in it; the tests are skipped, with the
reason, when no server answers.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from latency_lab.telemetry.testing import SpanCapture
from tests.telemetry.sample_app import create_app


# --- trace stores (the PostgreSQL ones are tests.postgres's) ---------------------------------
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
