import pytest
from app import list_books, list_books_eager, open_library

from latency_lab.telemetry.testing import assert_max_queries, assert_no_n_plus_one

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_lazy_listing_fits_one_statement() -> None:
    sessions = await open_library()
    with assert_max_queries(1):
        await list_books(sessions)


async def test_eager_listing_fits_one_statement() -> None:
    sessions = await open_library()
    with assert_max_queries(1), assert_no_n_plus_one():
        books = await list_books_eager(sessions)
    assert len(books) == 10
