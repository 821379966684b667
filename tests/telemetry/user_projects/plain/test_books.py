import pytest
from app import create_app
from flask.testing import FlaskClient

from latency_lab.telemetry.testing import assert_max_queries, assert_no_n_plus_one


@pytest.fixture
def client() -> FlaskClient:
    return create_app().test_client()


def test_lazy_listing_fits_one_statement(client: FlaskClient) -> None:
    with assert_max_queries(1):
        client.get("/books")


def test_lazy_listing_has_no_n_plus_one(client: FlaskClient) -> None:
    with assert_no_n_plus_one():
        client.get("/books")


def test_eager_listing_fits_one_statement(client: FlaskClient) -> None:
    with assert_max_queries(1), assert_no_n_plus_one():
        response = client.get("/books/eager")
    assert len(response.get_json()) == 10
