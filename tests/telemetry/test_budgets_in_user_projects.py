"""The span budgets in other people's projects, each run by pytest in a process of its own.

The projects live in ``user_projects/``: a plain Flask + SQLAlchemy app whose engine is made in
its app factory, the same app in a project with its own ``telemetry`` and ``service`` packages,
a Flask-SQLAlchemy quickstart, an asyncio engine, markers, and a process with no database at
all. None of them calls ``instrument_engine`` or asks for the ``spans`` fixture: the plugin
reaches them through its ``pytest11`` entry point, as it would after ``pip install``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROJECTS = Path(__file__).parent / "user_projects"


def user_project(pytester: pytest.Pytester, name: str, *borrowed: str) -> pytest.Pytester:
    """Copy ``user_projects/<name>`` (plus files borrowed from others) to a fresh directory."""
    for source in [*PROJECTS.joinpath(name).glob("*.py"), *map(PROJECTS.joinpath, borrowed)]:
        if source.name != "__init__.py":
            shutil.copy(source, pytester.path / source.name)
    return pytester


# The lab's own test tools are installed too; a user's project would not load them.
NOT_THE_USERS = ("no:cacheprovider", "no:schemathesis", "no:hypothesispytest", "no:faker")


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    options = [option for plugin in NOT_THE_USERS for option in ("-p", plugin)]
    return project.runpytest_subprocess(*options, "-rA", *args)


def line_of(path: Path, fragment: str) -> int:
    """The line number of the first line of ``path`` containing ``fragment``."""
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if fragment in line)


def test_plain_flask_app_lazy_listing_fails_and_eager_passes(pytester: pytest.Pytester) -> None:
    result = run(user_project(pytester, "plain"))

    result.assert_outcomes(passed=1, failed=2)
    lazy_line = line_of(PROJECTS / "plain" / "app.py", "b.author.name} for b in listing")
    result.stdout.fnmatch_lines(
        [
            "*SpanBudgetError: Expected at most 1 database statements, 11 were executed:",
            "*1. SELECT books.id, books.title, books.author_id FROM books ORDER BY books.id",
            "*2. SELECT authors.id AS authors_id, * WHERE authors.id = ?  [[]Book.author]",
            "*Repeated statements (same shape, different parameters):",
            "*10x SELECT authors.id AS authors_id, * WHERE authors.id = ?"
            f"  [[]Book.author, from app.py:{lazy_line} in books]",
            "*N+1 findings (threshold 5):",
            f"*Book.author: 10 statements (threshold 5, *ms in total) from app.py:{lazy_line} in"
            " books; fix: joinedload(Book.author) or selectinload(Book.author)",
        ]
    )
    result.stdout.fnmatch_lines(["*SpanBudgetError: N+1 detected: 1 repeated pattern(s) of 5*"])
    result.stdout.fnmatch_lines(["PASSED test_books.py::test_eager_listing_fits_one_statement"])


def test_a_project_with_its_own_telemetry_and_service_packages(
    pytester: pytest.Pytester,
) -> None:
    """Everything we install is under ``latency_lab``: the project's ``telemetry`` and
    ``service`` stay its own, and the plugin still watches its engine."""
    source = PROJECTS / "own_packages"
    shutil.copytree(source, pytester.path, dirs_exist_ok=True, ignore=_not_the_projects)
    (pytester.path / "__init__.py").unlink()  # the project's root is no package
    shutil.copy(PROJECTS / "plain" / "app.py", pytester.path / "service" / "app.py")  # its app

    result = run(pytester)

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["PASSED test_books.py::test_its_own_packages_are_its_own"])
    result.stdout.fnmatch_lines(["*Expected at most 1 database statements, 11 were executed:*"])
    result.stdout.fnmatch_lines(["PASSED test_books.py::test_eager_listing_fits_one_statement"])


def _not_the_projects(_folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


def test_flask_sqlalchemy_app_is_watched(pytester: pytest.Pytester) -> None:
    result = run(user_project(pytester, "flask_sqlalchemy"))

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Expected at most 1 database statements, 11 were executed:",
            "*10x SELECT authors.id AS * WHERE authors.id = ?  [[]Book.author, from app.py:* in*",
            "*Book.author: 10 statements (threshold 5, *",
        ]
    )
    result.stdout.fnmatch_lines(["PASSED test_books.py::test_eager_listing_fits_one_statement"])


def test_async_engine_is_watched_from_an_async_test(pytester: pytest.Pytester) -> None:
    result = run(user_project(pytester, "async_engine"))

    result.assert_outcomes(passed=1, failed=1)
    awaited = line_of(PROJECTS / "async_engine" / "app.py", "await book.awaitable_attrs.author")
    result.stdout.fnmatch_lines(
        [
            "*Expected at most 1 database statements, 11 were executed:",
            f"*Book.author: 10 statements (threshold 5, *ms in total) from app.py:{awaited} in"
            " list_books; fix: *",
        ]
    )
    result.stdout.fnmatch_lines(["PASSED test_books.py::test_eager_listing_fits_one_statement"])


def test_markers_and_allowed_n_plus_one(pytester: pytest.Pytester) -> None:
    result = run(user_project(pytester, "markers", "plain/app.py"))

    result.assert_outcomes(passed=6, failed=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_markers.py::test_lazy_listing_marked_max_one*",
            "FAILED test_markers.py::test_lazy_listing_marked_no_n_plus_one*",
            "FAILED test_markers.py::test_own_failure_is_not_masked_by_the_budget - ValueE*",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        [
            "Span budget of this test's marker (latency_lab):",
            "Expected at most 1 database statements, 11 were executed:",
        ]
    )
    for allowed in ("by_the_marker", "in_the_block", "for_the_whole_test"):
        result.stdout.fnmatch_lines(
            [f"PASSED test_markers.py::test_lazy_listing_allowed_{allowed}"]
        )


def test_markers_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")

    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.max_queries(maximum): the test may run at most*",
            "@pytest.mark.queries(expected): *",
            "@pytest.mark.no_n_plus_one(threshold=5, allow=()): *",
            "@pytest.mark.allow_n_plus_one(*relationships): *",
        ],
        consecutive=False,
    )


def test_budget_that_could_see_nothing_fails_and_says_why(pytester: pytest.Pytester) -> None:
    result = run(user_project(pytester, "no_database"))

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Expected at most 1 database statements, but no database activity could be observed"
            " in this block: no SQLAlchemy engine in this process has opened a connection*",
            "*If the code under test runs in another process (a live server, a worker), put the"
            " budget in that process.*",
        ]
    )
