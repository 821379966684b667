"""Finished spans as rows: every span a ``spans`` row, every ``SERVER`` span a ``requests`` row.

A summary row is made from the ``lab.request.*`` accounting attributes the process put on its
server span: statements, database and third-party time, jobs, cache hits and misses per layer,
the configuration, toggles, world and N+1 findings. Its ``front_door`` flag says whether the
request entered the lab there: the edge's server spans always did; any other server span did when
it says so with ``lab.request.front_door`` (the service's does, unless the edge forwarded it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.store.schema import EDGE_ROLE, LAYERS


def span_row(span: ReadableSpan, attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``spans`` row of one finished span (a profile it carries goes to :func:`profile_row`).

    ``attributes``: the span's attributes as a plain dict, when the caller made one already.
    """
    attributes = dict(span.attributes or {}) if attributes is None else dict(attributes)
    attributes.pop(v.PROFILE, None)
    resource = span.resource.attributes
    start_ns = span.start_time or 0
    end_ns = span.end_time or start_ns
    context = span.context
    return {
        "trace_id": format(context.trace_id, "032x") if context else "0" * 32,
        "span_id": format(context.span_id, "016x") if context else "0" * 16,
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": str(resource.get("service.name", "unknown")),
        "role": str(resource.get(v.PROCESS_ROLE, "")),
        "start_ns": start_ns,
        "end_ns": end_ns,
        "duration_ms": (end_ns - start_ns) / 1e6,
        "status": span.status.status_code.name,
        "lab_kind": v.kind_of(span.name, attributes).value,
        "statement": v.db_statement(attributes),
        "attributes": json.dumps(attributes, default=str),
    }


def request_row(
    span: ReadableSpan,
    row: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The ``requests`` summary row of a ``SERVER`` span, or ``None`` for any other span."""
    if span.kind != SpanKind.SERVER:
        return None
    attributes = dict(span.attributes or {}) if attributes is None else attributes
    base = row if row is not None else span_row(span, attributes)
    target = v.first_attribute(attributes, v.HTTP_TARGET_KEYS)
    route = v.first_attribute(attributes, v.HTTP_ROUTE_KEYS) or target or span.name
    n_plus_one = attributes.get(v.REQ_N_PLUS_ONE)
    return {
        **{key: base[key] for key in ("trace_id", "span_id", "service", "role", "start_ns")},
        "duration_ms": base["duration_ms"],
        "route": str(route),
        "method": str(v.first_attribute(attributes, v.HTTP_METHOD_KEYS) or ""),
        "target": str(target or ""),
        "status": v.http_status(attributes),
        "db_time_ms": _float(attributes.get(v.REQ_DB_TIME_MS)),
        "ext_time_ms": _float(attributes.get(v.REQ_EXT_TIME_MS)),
        **_counters(attributes),
        "config": str(attributes.get(v.CONFIG_KEY) or ""),
        "toggles": json.dumps(_prefixed(attributes, v.TOGGLE_PREFIX), default=str),
        "world": json.dumps(_prefixed(attributes, v.WORLD_PREFIX), default=str),
        "n_plus_one": str(n_plus_one) if n_plus_one else None,
        "n_plus_one_count": _finding_count(n_plus_one),
        "front_door": is_front_door(base["role"], attributes),
    }


def is_front_door(role: str, attributes: Mapping[str, Any]) -> bool:
    """Whether a server span is where its request entered the lab (see the module docstring)."""
    return role == EDGE_ROLE or bool(attributes.get(v.REQ_FRONT_DOOR, False))


def _counters(attributes: Mapping[str, Any]) -> dict[str, int]:
    counters = {
        "db_statements": _int(attributes.get(v.REQ_DB_STATEMENTS)),
        "ext_calls": _int(attributes.get(v.REQ_EXT_CALLS)),
        "jobs_enqueued": _int(attributes.get(v.REQ_JOBS_ENQUEUED)),
    }
    for layer in LAYERS:
        counters[f"cache_hits_{layer}"] = _int(attributes.get(v.REQ_CACHE_HITS_PREFIX + layer))
        counters[f"cache_misses_{layer}"] = _int(attributes.get(v.REQ_CACHE_MISSES_PREFIX + layer))
    return counters


def _prefixed(attributes: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        key[len(prefix) :]: value for key, value in attributes.items() if key.startswith(prefix)
    }


def _finding_count(raw: Any) -> int:
    if not raw:
        return 0
    try:
        findings = json.loads(str(raw))
    except ValueError:
        return 0
    return len(findings) if isinstance(findings, list) else 0


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _float(value: Any) -> float:
    return float(value) if value is not None else 0.0


def profile_row(span: ReadableSpan, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``profiles`` row of a profiled span (``lab.profile``), or ``None``."""
    document = (span.attributes or {}).get(v.PROFILE)
    if not isinstance(document, str):
        return None
    return {
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "service": row["service"],
        "name": row["name"],
        "start_ns": row["start_ns"],
        "document": document,
    }
