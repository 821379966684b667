from collections.abc import Iterator

import pytest
from app import app, db, seed
from flask.testing import FlaskClient

from latency_lab.telemetry.testing import assert_max_queries, assert_no_n_plus_one


@pytest.fixture
def client() -> Iterator[FlaskClient]:
    seed()
    yield app.test_client()
    with app.app_context():
        db.drop_all()


def test_lazy_listing_fits_one_statement(client: FlaskClient) -> None:
    with assert_max_queries(1):
        client.get("/books")


def test_eager_listing_fits_one_statement(client: FlaskClient) -> None:
    with assert_max_queries(1), assert_no_n_plus_one():
        response = client.get("/books/eager")
    assert len(response.get_json()) == 10
