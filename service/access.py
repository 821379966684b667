"""Who may change the lab: the admin API and the per-request toggle override.

Without ``LAB_ADMIN_TOKEN`` the lab only listens on loopback (``Settings`` refuses otherwise), so a
loopback caller is trusted. With a token, the caller must present it as ``Authorization: Bearer``
or ``X-Lab-Admin-Token``; the comparison is constant-time.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Protocol

ADMIN_TOKEN_HEADER = "X-Lab-Admin-Token"


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
