"""The lab's admin API as the dashboard calls it: read and change the toggles and the world.

Every failure becomes a :class:`~.errors.DashboardError` that says what to do: the service does
not answer, the admin token was refused, or the lab refused a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import streamlit as st

from latency_lab.core.toggles import Toggles
from latency_lab.core.world import World
from latency_lab.dashboard.data.connections import admin_client, settings
from latency_lab.dashboard.data.errors import (
    START_LAB_HINT,
    AdminRefused,
    InvalidChange,
    ServiceUnavailable,
)


def _admin(method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    url = settings().resolved_service_url
    try:
        response = admin_client().request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"{url} did not answer ({type(exc).__name__}).",
            f"{START_LAB_HINT} If it runs elsewhere, set LAB_SERVICE_URL for the dashboard.",
        ) from None
    if response.status_code in (401, 403):
        raise AdminRefused(
            _error_text(response),
            "Give the dashboard the lab's token: LAB_ADMIN_TOKEN=<token> in its environment.",
        )
    if response.status_code in (400, 422):
        raise InvalidChange(_error_text(response), "Adjust the value and try again.")
    if response.status_code >= 400:
        raise ServiceUnavailable(
            f"{url}{path} answered {response.status_code}: {_error_text(response)}",
            "Look at the service's log (LAB_VAR_DIR/log/service.log).",
        )
    return response.json()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except ValueError:
        return response.text[:200] or response.reason_phrase


@st.cache_data(ttl=3, show_spinner=False)
def toggles() -> Toggles:
    """The live toggles every service process follows."""
    return Toggles(**_admin("GET", "/admin/toggles")["toggles"])


def set_toggles(changes: Mapping[str, bool]) -> Toggles:
    """Change some toggles for every process (effective within 1 s)."""
    answer = _admin("PUT", "/admin/toggles", dict(changes))
    toggles.clear()
    return Toggles(**answer["toggles"])


@st.cache_data(ttl=3, show_spinner=False)
def world() -> World:
    """The simulated world's live settings."""
    return World.model_validate(_admin("GET", "/admin/world"))


def set_world(changes: Mapping[str, Any]) -> World:
    answer = _admin("PUT", "/admin/world", dict(changes))
    world.clear()
    return World.model_validate(answer)
