"""Deterministic data for the lab: the same seed gives the same rows, on SQLite and PostgreSQL."""
