"""Budgets on whole tests (markers) and accepted N+1s (``allow=``), on the plain project's app."""

import pytest
from app import create_app
from flask.testing import FlaskClient

from latency_lab.telemetry.testing import assert_no_n_plus_one


@pytest.fixture
def client() -> FlaskClient:
    return create_app().test_client()  # schema and seed: in setup, outside the markers


@pytest.mark.max_queries(1)
def test_lazy_listing_marked_max_one(client: FlaskClient) -> None:
    client.get("/books")


@pytest.mark.max_queries(1)
def test_eager_listing_marked_max_one(client: FlaskClient) -> None:
    client.get("/books/eager")


@pytest.mark.queries(2)
def test_two_eager_listings_marked_exactly_two(client: FlaskClient) -> None:
    client.get("/books/eager")
    client.get("/books/eager")


@pytest.mark.no_n_plus_one
def test_lazy_listing_marked_no_n_plus_one(client: FlaskClient) -> None:
    client.get("/books")


@pytest.mark.no_n_plus_one(allow=["Book.author"])
def test_lazy_listing_allowed_by_the_marker(client: FlaskClient) -> None:
    client.get("/books")


@pytest.mark.no_n_plus_one(threshold=11)
def test_lazy_listing_under_a_higher_threshold(client: FlaskClient) -> None:
    client.get("/books")


def test_lazy_listing_allowed_in_the_block(client: FlaskClient) -> None:
    with assert_no_n_plus_one(allow=["Book.author"]):
        client.get("/books")


@pytest.mark.allow_n_plus_one("Book.author")
def test_lazy_listing_allowed_for_the_whole_test(client: FlaskClient) -> None:
    with assert_no_n_plus_one():
        client.get("/books")


@pytest.mark.max_queries(1)
def test_own_failure_is_not_masked_by_the_budget(client: FlaskClient) -> None:
    client.get("/books")
    raise ValueError("the test's own error")
