"""Every error is JSON naming the problem: never an HTML page, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "score", "message": "..."}]``."""
    out = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        out.append({"field": field, "message": message})
    return out


class ApiError(Exception):
    """An error the client can fix; ``status`` and ``message`` go to the response as they are."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ValidationError, _validation_error)
    register_json_errors(app, "the service")


def register_json_errors(app: Flask, who: str) -> None:
    """HTTP errors and anything unexpected as JSON, for each of the lab's Flask apps."""
    app.register_error_handler(HTTPException, _http_error)

    def unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("%s: unhandled error", who)
        return error_response(
            500, f"{who} failed unexpectedly ({type(exc).__name__}); its log has the details"
        )

    app.register_error_handler(Exception, unexpected)


def error_response(status: int, message: str, **details: Any) -> ResponseReturnValue:
    return jsonify({"error": message, "status": status, **details}), status


def _api_error(exc: ApiError) -> ResponseReturnValue:
    return error_response(exc.status, exc.message, **exc.details)


def _validation_error(exc: ValidationError) -> ResponseReturnValue:
    return error_response(422, "validation failed", fields=field_errors(exc))


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    messages = {
        413: "request body too large",
        404: "no such resource",
        405: "method not allowed here",
    }
    code = exc.code or 500
    return error_response(code, messages.get(code, exc.description or exc.name))
