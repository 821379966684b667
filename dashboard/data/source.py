"""The guided tour's code references: the source of a function of the lab, by name."""

from __future__ import annotations

import importlib
import inspect
import textwrap
from typing import Any

import streamlit as st


def source_of(target: str) -> str:
    """The source of ``module:qualname`` (e.g. ``latency_lab.service.api:_strategy``), dedented.

    Only a found source is cached: a target that failed once (a module being edited) is looked
    up again on the next run instead of showing the failure for the dashboard's lifetime.
    """
    try:
        return _cached_source(target)
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        return f"# The source of {target} is not available here ({type(exc).__name__}: {exc})"


@st.cache_data(show_spinner=False)
def _cached_source(target: str) -> str:
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return textwrap.dedent(inspect.getsource(obj))
