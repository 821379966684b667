"""The lab's admin API as the dashboard calls it: read and change the toggles and the world.

Every failure becomes a :class:`~.errors.DashboardError` that says what to do: the service does
not answer, the admin token was refused, or the lab refused a value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import streamlit as st

from latency_lab.core.admin_client import AdminError, AdminProblem
from latency_lab.core.toggles import Toggles
from latency_lab.core.world import World
from latency_lab.dashboard.data.connections import admin_client
from latency_lab.dashboard.data.errors import (
    AdminRefused,
    InvalidChange,
    ServiceUnavailable,
)

_AS_DASHBOARD_ERROR = {
    AdminProblem.UNREACHABLE: ServiceUnavailable,
    AdminProblem.REFUSED: AdminRefused,
    AdminProblem.INVALID: InvalidChange,
    AdminProblem.FAILED: ServiceUnavailable,
}


@contextmanager
def admin_errors() -> Iterator[None]:
    """The admin client's failure, as the dashboard's error of the same meaning."""
    try:
        yield
    except AdminError as exc:
        raise _AS_DASHBOARD_ERROR[exc.problem](exc.message, exc.hint) from None


@st.cache_data(ttl=3, show_spinner=False)
def toggles() -> Toggles:
    """The live toggles every service process follows."""
    with admin_errors():
        return admin_client().toggles()


def set_toggles(changes: Mapping[str, bool]) -> Toggles:
    """Change some toggles for every process (effective within 1 s)."""
    with admin_errors():
        answer = admin_client().set_toggles(dict(changes))
    toggles.clear()
    return answer


@st.cache_data(ttl=3, show_spinner=False)
def world() -> World:
    """The simulated world's live settings."""
    with admin_errors():
        return admin_client().world()


def set_world(changes: Mapping[str, Any]) -> World:
    with admin_errors():
        answer = admin_client().set_world(dict(changes))
    world.clear()
    return answer
