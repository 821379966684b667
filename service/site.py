"""``GET /`` (a small lead browser), its static assets, ``/healthz`` and ``/openapi.json``."""

from __future__ import annotations

import os

from flask import Blueprint, jsonify, render_template
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from latency_lab.service.context import service_context
from latency_lab.service.openapi import openapi_document

bp = Blueprint("site", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    return render_template("index.html")


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    service = service_context()
    database = _check_database()
    snapshot = service.state.refresh()
    healthy = database == "ok"
    body = {
        "status": "ok" if healthy else "degraded",
        "pid": os.getpid(),
        "database": database,
        "redis": "ok" if service.state.healthy else "unreachable (serving last known toggles)",
        "toggles": snapshot.toggles.model_dump(),
        "telemetry": {
            "enabled": service.telemetry.enabled,
            "exported_spans": service.telemetry.exported_spans(),
            "dropped_spans": service.telemetry.dropped_spans(),
        },
    }
    return jsonify(body), 200 if healthy else 503


def _check_database() -> str:
    try:
        with service_context().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not reachable"
        return f"unreachable ({type(exc).__name__})"
    return "ok"
