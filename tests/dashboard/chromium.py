"""Debian's Chromium for the browser tests (Playwright drives it: ``playwright install`` cannot
download here), with the flags a closed network and a root user need (docs: DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots (gitignored)


def require_chromium() -> None:
    """Skip, saying how to get it, where Chromium is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (as .ci/run does)")
