"""Profiles: taken with pyinstrument, kept as speedscope files, read back by package."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import create_engine, text

from latency_lab.telemetry.accounting import trace_id_of
from latency_lab.telemetry.profiles import CodeGroup, Profile, group_of, profiling

SCHEMA = json.loads((Path(__file__).parent / "speedscope" / "file-format-schema.json").read_text())


def _orm_and_json_work() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        for i in range(200):
            connection.execute(text("SELECT :x"), {"x": i}).all()
    json.dumps([{"a": i, "b": str(i)} for i in range(20_000)])


@pytest.fixture(scope="module")
def profile() -> Profile:
    with profiling("GET /work") as run:
        _orm_and_json_work()
    assert run.profile is not None
    return run.profile


def test_a_profile_is_a_valid_speedscope_file(profile: Profile) -> None:
    jsonschema.validate(profile.document, SCHEMA)
    assert profile.document["name"] == "GET /work"
    assert Profile.loads(profile.dumps()).document == profile.document


def test_self_time_is_grouped_by_package(profile: Profile) -> None:
    groups = profile.by_group()
    top = profile.self_times()

    assert groups[CodeGroup.ORM] > 0 and groups[CodeGroup.SERIALIZATION] > 0
    assert not profile.contains(CodeGroup.FRAMEWORK)
    assert sum(groups.values()) == pytest.approx(sum(f.self_ms for f in top))
    assert sum(groups.values()) <= profile.duration_ms * 1.01
    assert [f.self_ms for f in top] == sorted((f.self_ms for f in top), reverse=True)
    assert all(f.name != "[self]" for f in top)  # pyinstrument's own frames go to their owner


def test_the_icicle_nests_calls_under_their_callers(profile: Profile) -> None:
    rows = profile.icicle()
    by_id = {row["id"]: row for row in rows}

    assert any(row["label"] == "_orm_and_json_work" for row in rows)
    for row in rows:
        if row["parent"]:
            assert row["total_ms"] <= by_id[row["parent"]]["total_ms"] + 1e-6


@pytest.mark.parametrize(
    ("file", "group"),
    [
        ("/venv/lib/python3.11/site-packages/sqlalchemy/orm/loading.py", CodeGroup.ORM),
        ("/venv/lib/python3.11/site-packages/flask/app.py", CodeGroup.FRAMEWORK),
        ("/usr/lib/python3.11/json/encoder.py", CodeGroup.SERIALIZATION),
        (
            "/venv/lib/python3.11/site-packages/opentelemetry/sdk/trace/__init__.py",
            CodeGroup.TELEMETRY,
        ),
        ("/venv/lib/python3.11/site-packages/latency_lab/service/api.py", CodeGroup.LAB),
        ("/work/checkout/service/lead_loader.py", CodeGroup.LAB),
        ("/venv/lib/python3.11/site-packages/psycopg/cursor.py", CodeGroup.DRIVER),
        ("<built-in>", CodeGroup.OTHER),
        (None, CodeGroup.OTHER),
    ],
)
def test_groups(file: str | None, group: CodeGroup) -> None:
    assert group_of(file) is group


@pytest.mark.parametrize(
    ("name", "group"),
    [("sleep", CodeGroup.WAITING), ("socket.recv_into", CodeGroup.WAITING),
     ("Cursor.execute", CodeGroup.DRIVER), ("list.append", CodeGroup.OTHER)],
)  # fmt: skip
def test_built_ins_are_grouped_by_name(name: str, group: CodeGroup) -> None:
    assert group_of("<built-in>", name) is group


@pytest.mark.parametrize("text_", ["", "{", "[]", '{"profiles": []}'])
def test_what_is_not_a_profile_is_refused_clearly(text_: str) -> None:
    with pytest.raises(ValueError, match="not a speedscope profile"):
        Profile.loads(text_)


@pytest.mark.parametrize(
    ("header", "trace_id"),
    [
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
         "4bf92f3577b34da6a3ce929d0e0e4736"),
        (None, None),
        ("", None),
        ("00-nothex-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-01", None),
    ],
)  # fmt: skip
def test_a_traceresponse_names_its_trace(header: str | None, trace_id: str | None) -> None:
    assert trace_id_of(header) == trace_id
