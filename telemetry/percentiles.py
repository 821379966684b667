"""The lab's one percentile definition: nearest rank.

The p-th percentile of ``n`` values is the ``ceil(p/100 * n)``-th smallest of them: always a
value that was measured, never an interpolation between two. It is what PostgreSQL's
``percentile_disc`` computes, so the trace store agrees with itself on SQLite and PostgreSQL, and
the load generator (``latency-lab load``), the bench and the dashboard, which all call these
functions, show the same p50 for the same requests.

For small samples the definitions in the wild disagree (``statistics.median`` of 4 values is
the mean of the middle two; numpy interpolates by default): this one is chosen because it is
exact on both stores' databases and a person can check it by sorting a column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

Percent = TypeVar("Percent", int, float)


def rank(count: int, percent: float) -> int:
    """The 1-based rank of the ``percent``-th percentile among ``count`` values (at least 1)."""
    if not 0 < percent <= 100:
        raise ValueError(f"a percentile is in (0, 100], got {percent}")
    # ceil(p * n / 100) in integers where p is whole, so 50 % of 4 is rank 2, not 2.0000001.
    scaled = percent * count
    whole = int(scaled)
    exact = whole if whole == scaled else whole + 1
    return max(1, -(-exact // 100))


def nearest_rank(values: Iterable[float], percent: float) -> float | None:
    """The ``percent``-th percentile of ``values`` (any order); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[rank(len(ordered), percent) - 1]


def nearest_ranks(values: Iterable[float], percents: Sequence[Percent]) -> dict[Percent, float]:
    """``{p: nearest_rank(values, p)}`` for several percentiles, sorting once."""
    ordered = sorted(values)
    if not ordered:
        return {}
    return {p: ordered[rank(len(ordered), p) - 1] for p in percents}
