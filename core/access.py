"""Who may change the lab: the admin API and the per-request toggle override.

Without ``LAB_ADMIN_TOKEN`` the lab only listens on loopback (``Settings`` refuses otherwise), so a
loopback caller is trusted. With a token, the caller must present it as ``Authorization: Bearer``
or ``X-Lab-Admin-Token``; the comparison is constant-time.

A request's configuration (``X-Lab-Toggles``) may also be pinned by the edge: it forwards the
configuration it decided on, so that the edge, the service and the jobs all apply the same one,
even in the second after a flip. From loopback the edge is trusted like any loopback caller; with
a token it signs what it forwards (``X-Lab-Toggles-Signature``, an HMAC of the configuration under
the admin token), which pins that one configuration and grants nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Protocol

from latency_lab.core.toggles import TOGGLE_HEADER, Toggles

ADMIN_TOKEN_HEADER = "X-Lab-Admin-Token"
CONFIG_SIGNATURE_HEADER = "X-Lab-Toggles-Signature"


class HeaderLookup(Protocol):
    """Anything with ``get(name)``: a dict, werkzeug's ``Headers``, httpx's ``Headers``."""

    def get(self, key: str, /) -> str | None: ...


def presented_token(headers: HeaderLookup) -> str | None:
    direct = headers.get(ADMIN_TOKEN_HEADER)
    if direct:
        return direct
    authorization = headers.get("Authorization") or ""
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def is_loopback(remote_addr: str | None) -> bool:
    if not remote_addr:
        return False
    try:
        return ipaddress.ip_address(remote_addr).is_loopback
    except ValueError:
        return False


def is_admin(remote_addr: str | None, headers: HeaderLookup, admin_token: str | None) -> bool:
    """True when this caller may use ``/admin/*`` and ``X-Lab-Toggles``."""
    if admin_token:
        token = presented_token(headers)
        return token is not None and hmac.compare_digest(token.encode(), admin_token.encode())
    return is_loopback(remote_addr)


def configuration_signature(configuration: str, admin_token: str) -> str:
    """What the edge sends beside the configuration it forwards, when the lab has a token."""
    return hmac.new(admin_token.encode(), configuration.encode(), hashlib.sha256).hexdigest()


def may_pin_configuration(
    remote_addr: str | None, headers: HeaderLookup, configuration: str, admin_token: str | None
) -> bool:
    """True when ``configuration`` (an ``X-Lab-Toggles`` value) may decide this request."""
    if is_admin(remote_addr, headers, admin_token):
        return True
    signature = headers.get(CONFIG_SIGNATURE_HEADER)
    if not admin_token or not signature:
        return False
    expected = configuration_signature(configuration, admin_token)
    return hmac.compare_digest(signature.encode(), expected.encode())


class OverrideRefused(Exception):
    """A request asked for its own configuration without being allowed to."""


def requested_toggles(shared: Toggles, override: str | None, *, may_override: bool) -> Toggles:
    """The toggles one request runs with: the shared ones, or ``X-Lab-Toggles`` over them.

    The one decision of a request's configuration, for the edge and the service alike. Raises
    :class:`OverrideRefused` when the caller may not override (the service answers 403; the
    edge, a public front door, drops the header) and ``ToggleError`` for a malformed override.
    """
    if override is None:
        return shared
    if not may_override:
        raise OverrideRefused(f"{TOGGLE_HEADER} needs loopback or the admin token")
    return Toggles.parse_override(override, base=shared)
