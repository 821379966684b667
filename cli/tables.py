"""The CLI's plain-text tables: aligned columns, a dashed rule under the headers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_number(value: Any) -> str:
    """``2.0`` as ``2``, ``0.25`` as ``0.25``; anything else as ``str`` does."""
    return f"{value:g}" if isinstance(value, float) else str(value)
