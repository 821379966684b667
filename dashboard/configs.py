"""Configuration strings as people read them: short labels, the baseline, and toggle flips.

Every request summary carries its canonical configuration string
(``eager_loading=on,redis_cache=off,...``, see
:meth:`latency_lab.core.toggles.Toggles.label`). The dashboard groups by it, labels it briefly
(``all off``, ``eager + offload``) and finds the moments it changed: a *flip* is a change of
configuration between consecutive time buckets, labelled with the switches that moved
(``+eager``, ``-L1``).

Everything here is a pure function of strings and data frames, so pages and figures can share it
and tests can check it without Streamlit.
"""

from __future__ import annotations

import pandas as pd

from latency_lab.core.toggles import ARTICLE_ORDER, Toggle, ToggleError, Toggles

BASELINE = Toggles().label()
"""The article's "before": every optimization off."""

UNKNOWN = "unknown"
SHORT_NAMES = {
    Toggle.EAGER_LOADING: "eager",
    Toggle.ASYNC_OFFLOAD: "offload",
    Toggle.REDIS_CACHE: "L1",
    Toggle.APP_CACHE: "L2",
    Toggle.EDGE_CACHE: "CDN",
}


def parse(config: str) -> Toggles | None:
    """The :class:`Toggles` a configuration string names, or ``None`` when it names none."""
    if not config:
        return None
    try:
        return Toggles.parse_override(config, base=Toggles())
    except ToggleError:
        return None


def short_label(config: str) -> str:
    """``all off``, ``all on``, or the switches that are on in the article's order:
    ``eager + offload + L1``."""
    toggles = parse(config)
    if toggles is None:
        return config or UNKNOWN
    on = [SHORT_NAMES[toggle] for toggle in ARTICLE_ORDER if toggles.enabled(toggle)]
    if not on:
        return "all off"
    return "all on" if len(on) == len(ARTICLE_ORDER) else " + ".join(on)


def cumulative(step: int) -> Toggles:
    """The configuration after the first ``step`` optimizations of the article, in its order."""
    return Toggles(**{toggle.value: True for toggle in ARTICLE_ORDER[:step]})


def choices(current: str) -> list[str]:
    """``current`` first, then the article's steps (all off, + eager, ... all on), once each:
    the configurations one may ask a request to run in."""
    steps = [cumulative(step).label() for step in range(len(ARTICLE_ORDER) + 1)]
    return list(dict.fromkeys([current, *steps] if parse(current) else steps))


def changes(before: str, after: str) -> str:
    """What moved between two configurations: ``+eager -L1``."""
    old, new = parse(before), parse(after)
    if old is None or new is None:
        return short_label(after)
    moved = [
        f"{'+' if new.enabled(toggle) else '-'}{SHORT_NAMES[toggle]}"
        for toggle in ARTICLE_ORDER
        if old.enabled(toggle) != new.enabled(toggle)
    ]
    return " ".join(moved) or "same"


def flips(buckets: pd.DataFrame) -> pd.DataFrame:
    """The toggle flips in a time series: one row where the configuration changed.

    ``buckets`` has ``time``, ``config`` and ``first_ns`` (the first request of that
    configuration in that bucket), as :func:`latency_lab.dashboard.data.latency_over_time` returns.
    Rows are ordered by bucket, then by first request, so a bucket holding two configurations counts
    the change inside it once. Returns ``time``, ``config``, ``previous`` and ``label``.
    """
    columns = ["time", "config", "previous", "label"]
    if buckets.empty:
        return pd.DataFrame(columns=columns)
    ordered = buckets.sort_values(["time", "first_ns"])
    previous = ordered["config"].shift()
    changed = ordered[previous.notna() & (ordered["config"] != previous)].copy()
    changed["previous"] = previous[changed.index]
    changed["label"] = [
        changes(before, after)
        for before, after in zip(changed["previous"], changed["config"], strict=True)
    ]
    return changed[columns].reset_index(drop=True)
