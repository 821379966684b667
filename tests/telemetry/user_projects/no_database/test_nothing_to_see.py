"""Never a silent pass: a budget that could not have seen a statement fails and says why."""

from sqlalchemy import create_engine, text

from latency_lab.telemetry.testing import assert_max_queries, assert_queries


def test_budget_with_no_engine_in_the_process_fails() -> None:
    # As if the app ran in another process: nothing here talks to a database.
    with assert_max_queries(1):
        pass


def test_block_without_statements_passes_once_an_engine_is_watched() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        with assert_queries(0):
            pass
        with assert_queries(1):
            connection.execute(text("SELECT 2"))
