"""A project with its own top-level ``telemetry`` and ``service`` packages uses the budgets."""

import pytest
from flask.testing import FlaskClient

import telemetry
from latency_lab.telemetry.testing import assert_max_queries
from service.app import create_app


@pytest.fixture
def client() -> FlaskClient:
    return create_app().test_client()


def test_its_own_packages_are_its_own() -> None:
    assert telemetry.OWNER == "the user's project"
    assert telemetry.record("a sale") == "recorded a sale"


def test_lazy_listing_fits_one_statement(client: FlaskClient) -> None:
    with assert_max_queries(1):
        client.get("/books")


def test_eager_listing_fits_one_statement(client: FlaskClient) -> None:
    with assert_max_queries(1):
        client.get("/books/eager")
