"""One request's spans as a tree: where its time went, its waterfall rows, its background jobs.

The trace store hands back a trace as flat span rows (``TraceStore.trace_spans``). This module
turns them into what the trace explorer and the compare page show, with pure functions of data
frames:

* the *effective kind* of each span: its own
  :class:`~latency_lab.telemetry.vocabulary.SpanKindLabel`, or the kind of the nearest third-party
  or queue span above it (the HTTP client span inside a third-party call is third-party time, the
  Redis commands of an enqueue are queue time). Only those two wrap work that is theirs: a cache
  lookup's children are not cache time (the edge's ``cache.lookup edge`` wraps the whole forwarded
  request on a miss: the service's statements under it are database time), and a server span passes
  nothing down;
* *off the request path*: an ``rq.job`` consumer span and everything beneath it ran in a worker,
  after the request was answered, and is reported apart as background work;
* *self time*: a span's duration minus the part its children cover, so time by kind adds up to
  the request's duration instead of counting nested spans twice;
* *waterfall rows*: one row per span, except that statements of the same shape under the same
  parent share one row (the N+1's hundred lazy loads become one row with a hundred ticks),
  flagged when an N+1 finding names that shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.nplusone import Finding, normalize_statement

BACKGROUND = "background"
"""Effective kind of work done by a worker, off the request path."""

KIND_ORDER = (
    v.SpanKindLabel.DATABASE.value,
    v.SpanKindLabel.CACHE.value,
    v.SpanKindLabel.THIRD_PARTY.value,
    v.SpanKindLabel.QUEUE.value,
    v.SpanKindLabel.APPLICATION.value,
    BACKGROUND,
)
_PASSED_DOWN = {v.SpanKindLabel.THIRD_PARTY.value, v.SpanKindLabel.QUEUE.value}
"""Kinds whose children are the same work (a provider's HTTP call, an enqueue's commands)."""
_GROUPED = {v.SpanKindLabel.DATABASE.value, v.SpanKindLabel.THIRD_PARTY.value}
_SERVICE_PREFIX = "latency-lab-"
_SPACE = re.compile(r"\s+")
_FROM = re.compile(r"\bFROM\s+([\w.\"]+)", re.IGNORECASE)
_INDENT = "\u00a0\u00a0"
SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "service",
    "start_ns",
    "end_ns",
    "duration_ms",
    "status",
    "lab_kind",
    "statement",
)


@dataclass(frozen=True)
class BackgroundJob:
    """A job the request enqueued, as its worker span tells it."""

    func: str
    queue: str
    wait_ms: float | None
    run_ms: float
    status: str
    after_response_ms: float | None


def span_frame(spans: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Store rows (``attributes`` decoded) as a frame, with the lab attributes pulled out."""
    frame = pd.DataFrame([{key: span.get(key) for key in SPAN_COLUMNS} for span in spans])
    if frame.empty:
        return pd.DataFrame(columns=[*SPAN_COLUMNS, "relationship", "provider", "attributes"])
    attributes = [dict(span.get("attributes") or {}) for span in spans]
    frame["relationship"] = [a.get(v.ORM_RELATIONSHIP) for a in attributes]
    frame["provider"] = [a.get(v.THIRD_PARTY_PROVIDER) for a in attributes]
    frame["attributes"] = attributes
    return frame


# --- the tree ----------------------------------------------------------------------------------
def _children(frame: pd.DataFrame) -> dict[str | None, list[int]]:
    """Row positions of each span's children, in start order; roots under ``None``."""
    known = set(frame["span_id"])
    out: dict[str | None, list[int]] = {}
    order = frame.sort_values(["start_ns", "end_ns"], kind="stable").index
    parents = frame["parent_span_id"]
    for position in order:
        parent = parents[position]
        out.setdefault(parent if parent in known else None, []).append(int(position))
    return out


def _is_job(name: Any, kind: Any) -> bool:
    return bool(name == v.SPAN_JOB or kind == "CONSUMER")


def _own_kind(name: str, lab_kind: str, kind: Any, has_children: bool) -> str:
    """The edge's server span is the cache when nothing ran beneath it (it answered from its
    cache); a server span that forwarded the request is application time, whatever its tag."""
    if kind == "SERVER" and has_children:
        return v.SpanKindLabel.APPLICATION.value
    if name == v.SPAN_EDGE:
        return v.SpanKindLabel.CACHE.value
    return lab_kind


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``depth``, ``effective_kind``, ``off_path`` and ``self_ms`` to a trace's spans."""
    out = frame.reset_index(drop=True)
    if out.empty:
        out = out.copy()
        out["depth"] = pd.Series(dtype=int)
        out["effective_kind"] = pd.Series(dtype=str)
        out["off_path"] = pd.Series(dtype=bool)
        out["self_ms"] = pd.Series(dtype=float)
        return out
    children = _children(out)
    span_ids, names = out["span_id"].tolist(), out["name"].tolist()
    kinds, lab_kinds = out["kind"].tolist(), out["lab_kind"].astype(str).tolist()
    count = len(out)
    depth, effective, off_path = [0] * count, [""] * count, [False] * count
    stack: list[tuple[int, int, str | None, bool]] = [
        (position, 0, None, False) for position in reversed(children.get(None, []))
    ]
    while stack:
        position, level, inherited, background = stack.pop()
        background = background or _is_job(names[position], kinds[position])
        own = (
            BACKGROUND
            if background
            else (
                inherited
                or _own_kind(
                    names[position],
                    lab_kinds[position],
                    kinds[position],
                    bool(children.get(span_ids[position])),
                )
            )
        )
        depth[position], effective[position], off_path[position] = level, own, background
        passed = own if own in _PASSED_DOWN and kinds[position] != "SERVER" else inherited
        for child in reversed(children.get(span_ids[position], [])):
            stack.append((child, level + 1, passed, background))
    out = out.assign(depth=depth, effective_kind=effective, off_path=off_path)
    out["self_ms"] = _self_times(out, children)
    return out


def _self_times(frame: pd.DataFrame, children: Mapping[str | None, list[int]]) -> list[float]:
    """Duration minus the union of the children's intervals (clipped to the span)."""
    starts = [int(x) for x in frame["start_ns"]]
    ends = [int(x) for x in frame["end_ns"]]
    selves = []
    for position, span_id in enumerate(frame["span_id"]):
        start, end = starts[position], ends[position]
        intervals = [
            (max(start, starts[child]), min(end, ends[child]))
            for child in children.get(span_id, [])
        ]
        selves.append(max(0, (end - start) - _covered(intervals)) / 1e6)
    return selves


def _covered(intervals: Iterable[tuple[int, int]]) -> int:
    total, reach = 0, None
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


# --- time by kind -------------------------------------------------------------------------------
def time_by_kind(annotated: pd.DataFrame) -> pd.DataFrame:
    """Self time and span count per effective kind: ``kind``, ``time_ms``, ``spans``."""
    if annotated.empty:
        return pd.DataFrame({"kind": [], "time_ms": [], "spans": []})
    grouped = annotated.groupby("effective_kind").agg(
        time_ms=("self_ms", "sum"), spans=("span_id", "count")
    )
    grouped = grouped.reindex([k for k in KIND_ORDER if k in grouped.index])
    return grouped.reset_index(names="kind")


def time_by_kind_per_request(spans: pd.DataFrame) -> pd.DataFrame:
    """Average self time and span count per kind over many traces (``trace_id`` column).

    Span ids are unique across traces, so the whole sample is annotated as one forest.
    """
    if spans.empty:
        return pd.DataFrame({"kind": [], "time_ms": [], "spans": []})
    totals = time_by_kind(annotate(spans)).set_index("kind")
    per_request = totals / spans["trace_id"].nunique()
    return per_request.reset_index()


# --- N+1 findings ---------------------------------------------------------------------------------
def findings_of(spans: pd.DataFrame) -> list[Finding]:
    """The N+1 findings recorded on the trace's server spans (service, not edge)."""
    for attributes in spans.get("attributes", pd.Series(dtype=object)):
        raw = (attributes or {}).get(v.REQ_N_PLUS_ONE)
        if raw:
            try:
                return Finding.loads(str(raw))
            except (ValueError, TypeError):
                return []
    return []


def shape_of(row: Mapping[str, Any]) -> str | None:
    """What makes two spans "the same" for the N+1: statement shape, or third-party provider."""
    statement = row.get("statement")
    if isinstance(statement, str) and statement:
        return normalize_statement(statement)
    provider = row.get("provider")
    return str(provider) if provider else None


# --- waterfall ------------------------------------------------------------------------------------
def waterfall(annotated: pd.DataFrame, findings: Sequence[Finding] = ()) -> pd.DataFrame:
    """Segments to draw: ``row``, ``label``, ``start_ms``, ``duration_ms``, ``kind``, ...

    Same-shape statements (or provider calls) under one parent share a row; ``n_plus_one`` is
    set on segments whose shape a finding names, with its ``relationship`` and ``fix``.
    """
    columns = [
        "row",
        "label",
        "start_ms",
        "duration_ms",
        "kind",
        "name",
        "service",
        "detail",
        "n_plus_one",
        "relationship",
        "fix",
        "off_path",
        "count",
    ]
    if annotated.empty:
        return pd.DataFrame(columns=columns)
    by_shape = {finding.shape: finding for finding in findings}
    origin = int(annotated["start_ns"].min())
    children = _children(annotated)
    segments: list[dict[str, Any]] = []
    _emit(None, children, annotated, origin, by_shape, segments)
    return pd.DataFrame(segments, columns=columns)


def _emit(
    parent: str | None,
    children: Mapping[str | None, list[int]],
    frame: pd.DataFrame,
    origin: int,
    by_shape: Mapping[str, Finding],
    segments: list[dict[str, Any]],
) -> None:
    """Depth-first: each child (or group of same-shape children) gets the next row."""
    groups: dict[tuple[str, str], list[int]] = {}
    order: list[tuple[str, str] | int] = []
    for position in children.get(parent, []):
        row = frame.loc[position]
        lab_kind = str(row["lab_kind"])
        shape = shape_of(row) if lab_kind in _GROUPED else None
        if shape is None:
            order.append(position)
            continue
        key = (lab_kind, shape)
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(position)
    for item in order:
        members = [item] if isinstance(item, int) else groups[item]
        row_number = segments[-1]["row"] + 1 if segments else 0
        finding = by_shape.get(item[1]) if isinstance(item, tuple) else None
        for position in members:
            segments.append(
                _segment(frame.loc[position], row_number, len(members), origin, finding)
            )
        if len(members) == 1:
            _emit(frame.at[members[0], "span_id"], children, frame, origin, by_shape, segments)


def _segment(
    row: pd.Series, row_number: int, count: int, origin: int, finding: Finding | None
) -> dict[str, Any]:
    label = span_label(row)
    if count > 1:
        label = f"{label} \u00d7{count}"
    return {
        "row": row_number,
        "label": _INDENT * int(row["depth"]) + label,
        "start_ms": (int(row["start_ns"]) - origin) / 1e6,
        "duration_ms": float(row["duration_ms"]),
        "kind": str(row["effective_kind"]),
        "name": str(row["name"]),
        "service": str(row["service"]),
        "detail": _detail(row),
        "n_plus_one": finding is not None,
        "relationship": finding.relationship if finding else row.get("relationship"),
        "fix": finding.fix if finding else None,
        "off_path": bool(row["off_path"]),
        "count": count,
    }


def span_label(row: Mapping[str, Any]) -> str:
    """A short name: ``SQL SELECT … FROM users (Lead.owner)``, ``GET /api/leads``..."""
    statement = row.get("statement")
    if isinstance(statement, str) and statement:
        text = _SPACE.sub(" ", statement).strip()
        verb = text.split(" ", 1)[0].upper()
        table = _FROM.search(text)
        label = f"SQL {verb} … FROM {table.group(1)}" if table else f"SQL {text[:40]}"
        relationship = row.get("relationship")
        return f"{label} ({relationship})" if isinstance(relationship, str) else label
    name = str(row.get("name") or "span")
    if row.get("kind") == "SERVER":
        return f"{str(row.get('service', '')).removeprefix(_SERVICE_PREFIX)}: {name}"
    if row.get("kind") == "CLIENT" and row.get("lab_kind") == v.SpanKindLabel.APPLICATION:
        return f"HTTP {name}"
    return name


def _detail(row: pd.Series) -> str:
    statement = row.get("statement")
    text = _SPACE.sub(" ", statement)[:160] if isinstance(statement, str) else str(row["name"])
    return f"{row['service']}: {text}"


# --- background jobs ------------------------------------------------------------------------------
def background_jobs(annotated: pd.DataFrame) -> list[BackgroundJob]:
    """The ``rq.job`` spans of a trace: queue wait, run time, and how long after the response."""
    if annotated.empty:
        return []
    servers = annotated[(annotated["kind"] == "SERVER") & ~annotated["off_path"]]
    answered_ns = int(servers["end_ns"].max()) if not servers.empty else None
    is_job = [_is_job(n, k) for n, k in zip(annotated["name"], annotated["kind"], strict=True)]
    jobs = annotated[is_job]
    out = []
    for _, job in jobs.iterrows():
        attributes = job.get("attributes") or {}
        enqueued = attributes.get(v.JOB_ENQUEUED_AT)
        start, end = int(job["start_ns"]), int(job["end_ns"])
        out.append(
            BackgroundJob(
                func=str(attributes.get(v.JOB_FUNC, job["name"])).rsplit(".", 1)[-1],
                queue=str(attributes.get(v.JOB_QUEUE, "")),
                wait_ms=(start - int(enqueued)) / 1e6 if enqueued else None,
                run_ms=float(job["duration_ms"]),
                status=str(job["status"]),
                after_response_ms=(end - answered_ns) / 1e6 if answered_ns else None,
            )
        )
    return out
