"""The message of a failed span budget, as a developer wants to read it.

Like Django Debug Toolbar's SQL panel, in plain text: every statement of the block (numbered,
one line each, with the relationship a lazy load was loading), then the statements of the same
shape grouped with where they came from, then each N+1 explained::

    Expected at most 1 database statements, 11 were executed:
        1. SELECT books.id, ... FROM books ORDER BY books.id
        2. SELECT authors.id, ... FROM authors WHERE authors.id = ?  [Book.author]
      ...
    Repeated statements (same shape, different parameters):
      10x SELECT authors.id, ... FROM authors WHERE authors.id = ?  [Book.author, from app.py:41 in
      books]
    N+1 findings (threshold 5):
      - Book.author: 10 statements (threshold 5, 1.2 ms in total) from app.py:41 in books;
        fix: joinedload(Book.author) or selectinload(Book.author)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from latency_lab.telemetry.nplusone import (
    Finding,
    StatementRecord,
    detect_n_plus_one,
    normalize_statement,
)

MAX_LISTED = 40
MAX_STATEMENT_CHARS = 180
_SELECT_LIST = re.compile(r"^(SELECT (?:DISTINCT )?)([^,]+?)(?: AS \w+)?, .*? FROM ", re.IGNORECASE)


def statement_report(
    heading: str,
    statements: Sequence[StatementRecord],
    calls: Sequence[str] = (),
    threshold: int = 5,
    findings: Sequence[Finding] | None = None,
    allowed: Sequence[Finding] = (),
) -> str:
    """Every statement, then the similar ones grouped, then the N+1s (and the allowed ones)."""
    lines = [f"{heading}:"]
    for number, record in enumerate(statements[:MAX_LISTED], start=1):
        lines.append(f"  {number:>3}. {short_statement(record.statement)}{_because(record)}")
    if len(statements) > MAX_LISTED:
        lines.append(f"  ... and {len(statements) - MAX_LISTED} more")
    lines.extend(_repeated(statements))
    if findings is None:
        findings = detect_n_plus_one(statements, threshold=threshold, calls=calls)
    if findings:
        lines.append(f"N+1 findings (threshold {threshold}):")
        lines.extend(f"  - {finding.describe()}" for finding in findings)
    if allowed:
        lines.append("Allowed N+1 (accepted by allow=):")
        lines.extend(f"  - {finding.describe()}" for finding in allowed)
    return "\n".join(lines)


def _repeated(statements: Sequence[StatementRecord]) -> list[str]:
    groups: dict[str, list[StatementRecord]] = {}
    for record in statements:
        groups.setdefault(normalize_statement(record.statement), []).append(record)
    similar = sorted(
        (records for records in groups.values() if len(records) > 1), key=len, reverse=True
    )
    if not similar:
        return []
    return ["Repeated statements (same shape, different parameters):"] + [
        f"  {len(records)}x {short_statement(normalize_statement(records[0].statement))}"
        f"{_where(records)}"
        for records in similar
    ]


def _where(records: Sequence[StatementRecord]) -> str:
    relationship = next((r.relationship for r in records if r.relationship), None)
    origin = next((r.origin for r in records if r.origin), None)
    parts = [part for part in (relationship, f"from {origin}" if origin else None) if part]
    return f"  [{', '.join(parts)}]" if parts else ""


def short_statement(statement: str) -> str:
    """One line; a long select list keeps its first column, so the ``WHERE`` stays readable."""
    flat = " ".join(statement.split())
    if len(flat) > MAX_STATEMENT_CHARS:
        flat = _SELECT_LIST.sub(lambda match: f"{match.group(1)}{match.group(2)}, ... FROM ", flat)
    if len(flat) <= MAX_STATEMENT_CHARS:
        return flat
    return flat[: MAX_STATEMENT_CHARS - 3] + "..."


def _because(record: StatementRecord) -> str:
    return f"  [{record.relationship}]" if record.relationship else ""
