"""The one client of the lab's admin API (``/admin/toggles``, ``/admin/world``).

The CLI (``latency-lab toggles``, ``latency-lab world``) and the dashboard both change the lab
through it, so both send the admin token the same way and fail with the same words::

    client = AdminClient.from_settings(settings)        # LAB_SERVICE_URL, LAB_ADMIN_TOKEN
    client.set_toggles({"eager_loading": True})         # -> Toggles, as every process now has them
    client.world().db_round_trip_ms

Every failure is an :class:`AdminError` whose message says what was wrong and what to do, and
whose :attr:`~AdminError.problem` says which kind of failure it was: the lab is unreachable, it
refused the admin token, it refused a value (naming the field), or it failed.

The base URL is the service's (the edge forwards ``/admin/*`` too). Callers that know better
than the settings, such as the CLI reading the running lab's ``var/lab.json``, pass ``base_url``:
this module stays below the supervisor and does not read lab files itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from types import TracebackType
from typing import Any

import httpx
from pydantic import ValidationError

from latency_lab.core.access import ADMIN_TOKEN_HEADER
from latency_lab.core.settings import Settings
from latency_lab.core.toggles import PROFILE_HEADER, TOGGLE_HEADER, Toggles
from latency_lab.core.world import World
from latency_lab.telemetry.accounting import trace_id_of

DEFAULT_TIMEOUT_S = 10.0
TOKEN_HINT = "set LAB_ADMIN_TOKEN to the lab's admin token"
SERVICE_LOG_HINT = "see the service's log (LAB_VAR_DIR/log/service.log)"


PROFILED_TIMEOUT_S = 60.0  # a profiled all-off list takes seconds on a busy machine


class AdminProblem(StrEnum):
    """Which kind of failure an admin call met."""

    UNREACHABLE = "unreachable"  # nothing answers at the URL (or it is not a URL)
    REFUSED = "refused"  # 401/403: the admin token is missing or wrong
    INVALID = "invalid"  # 400/422: a value the lab does not accept
    FAILED = "failed"  # any other error status, or an answer that is not the lab's


class AdminError(Exception):
    """An admin call that failed: ``message`` says what was wrong, ``hint`` what to do.

    ``str(error)`` is both, as one line: ``no lab answers at http://127.0.0.1:8001
    (ConnectError): start one with `latency-lab up`, or point LAB_SERVICE_URL at a running lab``.
    ``reason`` holds the lab's own words when it answered with an error.
    """

    def __init__(
        self,
        problem: AdminProblem,
        message: str,
        hint: str,
        *,
        status: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{message}: {hint}")
        self.problem = problem
        self.message = message
        self.hint = hint
        self.status = status
        self.reason = reason


class AdminClient:
    """Reads and changes the running lab's toggles and world over its admin API.

    ``url_hint`` names how the caller's user points the client elsewhere (``--url`` for the
    CLI, ``LAB_SERVICE_URL`` for the dashboard): it goes into the "unreachable" error.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        url_hint: str = "LAB_SERVICE_URL",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url_hint = url_hint
        headers = {ADMIN_TOKEN_HEADER: token} if token else {}
        try:
            self._http = httpx.Client(
                base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
            )
        except httpx.InvalidURL as exc:
            raise self._unreachable(exc) from None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        url_hint: str = "LAB_SERVICE_URL",
        transport: httpx.BaseTransport | None = None,
    ) -> AdminClient:
        """The service at ``base_url``, else ``LAB_SERVICE_URL`` (else LAB_HOST and its port),
        with ``LAB_ADMIN_TOKEN`` when one is set."""
        return cls(
            base_url or settings.resolved_service_url,
            token=settings.admin_token,
            timeout_s=timeout_s,
            url_hint=url_hint,
            transport=transport,
        )

    # --- typed calls ------------------------------------------------------------------------------
    def toggles(self) -> Toggles:
        """The live toggles every process follows."""
        return self._toggles(self.request("GET", "/admin/toggles"))

    def set_toggles(self, changes: Mapping[str, bool]) -> Toggles:
        """Switch some toggles for every process (effective within 1 s); returns all of them."""
        return self._toggles(self.request("PUT", "/admin/toggles", dict(changes)))

    def world(self) -> World:
        """The simulated world's live settings."""
        return self._world(self.request("GET", "/admin/world"))

    def set_world(self, changes: Mapping[str, Any]) -> World:
        """Change part of the world (nested: ``{"analytics": {"latency_ms": 50}}``)."""
        return self._world(self.request("PUT", "/admin/world", dict(changes)))

    # --- the raw call -----------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The lab's JSON answer to ``method path`` (``body`` sent as JSON), as it came."""
        try:
            response = self._http.request(method, path, json=body)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._unreachable(exc) from None
        if response.is_error:
            raise self._refusal(method, path, response)
        try:
            return response.json()
        except ValueError:
            raise self._not_the_lab(path) from None

    def profiled_get(
        self, target: str, configuration: str, *, timeout_s: float = PROFILED_TIMEOUT_S
    ) -> str:
        """``GET target`` at the service in ``configuration``, profiled (``X-Lab-Profile: on``,
        which needs what the admin API needs); the trace id its profile is stored under."""
        headers = {PROFILE_HEADER: "on", TOGGLE_HEADER: configuration}
        try:
            response = self._http.get(target, headers=headers, timeout=timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._unreachable(exc) from None
        if response.is_error:
            raise self._refusal("GET", target, response)
        trace_id = trace_id_of(response.headers.get("traceresponse"))
        if trace_id is None:
            raise self._not_the_lab(target)
        return trace_id

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- answers and errors -----------------------------------------------------------------------
    def _toggles(self, answer: Any) -> Toggles:
        try:
            return Toggles.model_validate(answer["toggles"])
        except (TypeError, KeyError, ValidationError):
            raise self._not_the_lab("/admin/toggles") from None

    def _world(self, answer: Any) -> World:
        try:
            return World.model_validate(answer)
        except ValidationError:
            raise self._not_the_lab("/admin/world") from None

    def _unreachable(self, exc: Exception) -> AdminError:
        return AdminError(
            AdminProblem.UNREACHABLE,
            f"no lab answers at {self.base_url} ({type(exc).__name__})",
            f"start one with `latency-lab up`, or point {self.url_hint} at a running lab",
        )

    def _not_the_lab(self, path: str) -> AdminError:
        return AdminError(
            AdminProblem.FAILED,
            f"{self.base_url}{path} did not answer as the lab's admin API does",
            f"is it the lab? point {self.url_hint} at the lab's service",
        )

    def _refusal(self, method: str, path: str, response: httpx.Response) -> AdminError:
        status, reason = response.status_code, error_reason(response)
        if status in (401, 403):
            message = f"the lab at {self.base_url} refused the admin request ({status}): {reason}"
            return AdminError(
                AdminProblem.REFUSED, message, TOKEN_HINT, status=status, reason=reason
            )
        if status in (400, 422):
            message = f"the lab refused the change ({status}): {reason}"
            hint = "correct that value and try again"
            return AdminError(AdminProblem.INVALID, message, hint, status=status, reason=reason)
        message = f"{method} {self.base_url}{path} failed ({status}): {reason}"
        return AdminError(
            AdminProblem.FAILED, message, SERVICE_LOG_HINT, status=status, reason=reason
        )


def error_reason(response: httpx.Response) -> str:
    """The lab's own words from an error answer: ``{"error": ..., "fields": [...]}``, else text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(body, dict):
        return json.dumps(body)[:300]
    fields = body.get("fields")
    if isinstance(fields, list) and fields:  # a validation failure: name each field
        return "; ".join(
            f"{f.get('field')}: {f.get('message')}" for f in fields if isinstance(f, dict)
        )
    for key in ("error", "message", "detail", "description"):
        if isinstance(body.get(key), str):
            return str(body[key])
    return json.dumps(body)[:300]
