"""Database URLs as users write them, made into what SQLAlchemy and psycopg 3 expect.

One function for the lab's database and the trace store alike: ``postgresql://`` and
``postgres://`` get the psycopg 3 driver, a bare path is an SQLite file, anything else is kept.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url


def normalize_url(url: str) -> URL:
    """A SQLAlchemy URL: ``postgresql://`` gets psycopg 3, a bare path is SQLite."""
    if "://" not in url:
        return make_url(f"sqlite:///{Path(url).expanduser().resolve()}")
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed
