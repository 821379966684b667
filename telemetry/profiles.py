"""Span-linked profiles: where a request's application time goes, function by function.

A profiled request (``X-Lab-Profile: on``, or every Nth request when ``LAB_PROFILE_EVERY`` asks
for it) runs under pyinstrument, a statistical profiler made for exactly this: it samples the
stack every ``interval`` (1 ms here) from a ``setstatprofile`` hook, so a profiled request pays a
few percent and an unprofiled one pays nothing (no hook is installed). Its output is kept in the
speedscope file format (``SpeedscopeRenderer``), which speedscope opens as it is and which other
tools import, and stored in the trace store beside the request's trace.

Reading one back (:class:`Profile`) gives what the lab shows:

* self time per function, the top ones first;
* self time per *group* of code (:class:`CodeGroup`): the lab's own code, SQLAlchemy, the
  database driver, Flask and Werkzeug, JSON serialization, OpenTelemetry, the rest;
* the call tree as icicle rows (``id``, ``parent``, ``label``, ``total_ms``), for plotly.

pyinstrument is imported only when a profile is taken, so reading profiles and the span-budget
plugin never need it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from latency_lab.telemetry import vocabulary

PROFILE_INTERVAL_S = 0.001
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


class CodeGroup(StrEnum):
    """Where a function's code comes from, for "time by package"."""

    LAB = "the lab"
    ORM = "SQLAlchemy"
    DRIVER = "database driver"
    FRAMEWORK = "Flask/Werkzeug"
    SERIALIZATION = "JSON"
    TELEMETRY = "OpenTelemetry"
    WAITING = "waiting (network, sleep)"
    OTHER = "other"


# Checked in order: the first marker found in a frame's file path decides its group.
_GROUP_MARKERS: tuple[tuple[str, CodeGroup], ...] = (
    ("/opentelemetry/", CodeGroup.TELEMETRY),
    ("/latency_lab/telemetry/", CodeGroup.TELEMETRY),
    ("/sqlalchemy/", CodeGroup.ORM),
    ("/psycopg/", CodeGroup.DRIVER),
    ("/sqlite3/", CodeGroup.DRIVER),
    ("/flask/", CodeGroup.FRAMEWORK),
    ("/werkzeug/", CodeGroup.FRAMEWORK),
    ("/gunicorn/", CodeGroup.FRAMEWORK),
    ("/json/", CodeGroup.SERIALIZATION),
    ("/latency_lab/", CodeGroup.LAB),
)
_LAB_FOLDERS = ("service", "core", "edge", "simulator", "worker", "seed", "lab")


# Built-in functions (no file of their own): where a request waits, and the sqlite3 driver's C.
_WAITING_BUILTINS = frozenset(
    {"sleep", "select", "poll", "socket.recv", "socket.recv_into", "socket.send",
     "socket.sendall", "socket.connect", "lock.acquire", "wait"}
)  # fmt: skip
_DRIVER_BUILTINS = ("Cursor.", "Connection.")


def group_of(file: str | None, name: str | None = None) -> CodeGroup:
    """The group of a frame, from its file (and, for a built-in, its name)."""
    if not file or file == "<built-in>":
        if name in _WAITING_BUILTINS:
            return CodeGroup.WAITING
        if name and name.startswith(_DRIVER_BUILTINS):
            return CodeGroup.DRIVER
        return CodeGroup.OTHER
    path = file.replace("\\", "/")
    for marker, group in _GROUP_MARKERS:
        if marker in path:
            return group
    # An editable install's files live at <checkout>/<folder>/..., without latency_lab/ in path.
    if "site-packages" not in path and any(f"/{name}/" in path for name in _LAB_FOLDERS):
        return CodeGroup.LAB
    return CodeGroup.OTHER


@dataclass(frozen=True)
class FunctionTime:
    """One function's time in a profile."""

    name: str
    file: str
    line: int | None
    group: CodeGroup
    self_ms: float

    @property
    def where(self) -> str:
        short = self.file.rsplit("/", 2)[-2:] if self.file else ["?"]
        return f"{'/'.join(short)}:{self.line}" if self.line else "/".join(short)


@dataclass
class _Node:
    frame: int
    total_s: float = 0.0
    children: dict[int, _Node] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A speedscope file (one evented profile) and what the lab reads from it."""

    document: dict[str, Any]

    # --- reading ---------------------------------------------------------------------------
    @classmethod
    def loads(cls, text: str) -> Profile:
        """Parse a stored profile; raises ValueError when it is not a speedscope file."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a speedscope profile: {exc}") from exc
        if not isinstance(document, dict) or not document.get("profiles"):
            raise ValueError("not a speedscope profile: no profiles in it")
        return cls(document)

    def dumps(self) -> str:
        return json.dumps(self.document, separators=(",", ":"))

    @property
    def _frames(self) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = self.document["shared"]["frames"]
        return frames

    @property
    def _events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.document["profiles"][0]["events"]
        return events

    @property
    def duration_ms(self) -> float:
        profile = self.document["profiles"][0]
        return (float(profile["endValue"]) - float(profile["startValue"])) * 1000

    def self_times(self) -> list[FunctionTime]:
        """Every function's self time, the largest first."""
        selves = [0.0] * len(self._frames)
        synthetic = {i for i, frame in enumerate(self._frames) if _is_synthetic(frame)}
        stack: list[int] = []
        last = None
        for event in self._events:
            at = float(event["at"])
            if stack and last is not None:
                # pyinstrument's "[self]" frames are time spent in the function above them.
                owner = next((f for f in reversed(stack) if f not in synthetic), stack[-1])
                selves[owner] += at - last
            last = at
            if event["type"] == "O":
                stack.append(int(event["frame"]))
            elif stack:
                stack.pop()
        out = [
            FunctionTime(
                name=str(frame.get("name") or "?"),
                file=str(frame.get("file") or ""),
                line=frame.get("line"),
                group=group_of(frame.get("file"), frame.get("name")),
                self_ms=seconds * 1000,
            )
            for frame, seconds in zip(self._frames, selves, strict=True)
            if seconds > 0
        ]
        return sorted(out, key=lambda f: f.self_ms, reverse=True)

    def by_group(self) -> dict[CodeGroup, float]:
        """Self time (ms) per group of code, every group present (0.0 when none)."""
        totals = dict.fromkeys(CodeGroup, 0.0)
        for function in self.self_times():
            totals[function.group] += function.self_ms
        return totals

    def contains(self, group: CodeGroup) -> bool:
        return self.by_group()[group] > 0

    def icicle(self, *, min_share: float = 0.005) -> list[dict[str, Any]]:
        """The call tree as rows ``id``, ``parent``, ``label``, ``total_ms``, ``group``.

        Calls of one function under the same caller are merged, as a flame graph does; nodes
        under ``min_share`` of the whole are left out (the chart would not show them).
        """
        root = self._tree()
        whole = root.total_s or 1.0
        rows: list[dict[str, Any]] = []
        pending: list[tuple[_Node, str, str]] = [
            (child, "", "") for child in root.children.values()
        ]
        while pending:
            node, parent_id, path = pending.pop()
            if node.total_s / whole < min_share:
                continue
            frame = self._frames[node.frame]
            node_id = f"{path}/{node.frame}"
            rows.append(
                {
                    "id": node_id,
                    "parent": parent_id,
                    "label": str(frame.get("name") or "?"),
                    "total_ms": node.total_s * 1000,
                    "group": group_of(frame.get("file"), frame.get("name")).value,
                    "file": str(frame.get("file") or ""),
                }
            )
            pending.extend((child, node_id, node_id) for child in node.children.values())
        return rows

    def _tree(self) -> _Node:
        root = _Node(frame=-1)
        stack: list[tuple[_Node, float]] = [(root, 0.0)]
        for event in self._events:
            at = float(event["at"])
            frame = int(event["frame"])
            if event["type"] == "O":
                parent = stack[-1][0]
                node = parent.children.setdefault(frame, _Node(frame))
                stack.append((node, at))
            elif len(stack) > 1:
                node, opened = stack.pop()
                node.total_s += at - opened
        root.total_s = sum(child.total_s for child in root.children.values())
        return root


def _is_synthetic(frame: dict[str, Any]) -> bool:
    name = str(frame.get("name") or "")
    return not frame.get("file") and name.startswith("[")


# --- taking one ------------------------------------------------------------------------------
class ProfileRun:
    """A profile being taken on this thread: :meth:`start`, then :meth:`stop` for the Profile."""

    def __init__(self, name: str, *, interval_s: float = PROFILE_INTERVAL_S) -> None:
        from pyinstrument import Profiler

        self.name = name
        self.profile: Profile | None = None
        self._profiler = Profiler(interval=interval_s, async_mode="disabled")

    def start(self) -> ProfileRun:
        self._profiler.start()
        return self

    def stop(self) -> Profile:
        """Stop sampling and keep what was sampled (idempotent)."""
        if self.profile is None:
            from pyinstrument.renderers import SpeedscopeRenderer

            session = self._profiler.stop()
            # show_all: keep every frame, so self time is not folded into callers.
            rendered = SpeedscopeRenderer(show_all=True).render(session)
            self.profile = Profile(_speedscope(rendered, self.name))
        return self.profile

    def stop_onto(self, span: Any) -> None:
        """Stop, and put the profile on ``span``: the trace store keeps it with the trace
        (``lab.profile``, moved to its ``profiles`` table) and the span says it has one."""
        span.set_attribute(vocabulary.PROFILE, self.stop().dumps())
        span.set_attribute(vocabulary.PROFILED, True)


@contextmanager
def profiling(name: str, *, interval_s: float = PROFILE_INTERVAL_S) -> Iterator[ProfileRun]:
    """Profile the block (this thread only); ``run.profile`` is set when it ends."""
    run = ProfileRun(name, interval_s=interval_s).start()
    try:
        yield run
    finally:
        run.stop()


def _speedscope(rendered: str, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(rendered)
    document["name"] = name
    document["activeProfileIndex"] = 0
    # The format has no null: a built-in's frame has no file or line, so it leaves them out.
    document["shared"]["frames"] = [
        {key: value for key, value in frame.items() if value is not None}
        for frame in document["shared"]["frames"]
    ]
    return document
