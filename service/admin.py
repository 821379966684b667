"""``/admin/toggles`` and ``/admin/world``: the shared state every process follows within 1 s.

Only for loopback callers, or anyone presenting ``LAB_ADMIN_TOKEN`` when one is set.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from latency_lab.core.access import is_admin
from latency_lab.core.errors import ApiError
from latency_lab.core.toggles import ToggleError, Toggles
from latency_lab.core.world import World, WorldError
from latency_lab.service.context import service_context

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def _require_admin() -> None:
    settings = service_context().settings
    if not is_admin(request.remote_addr, request.headers, settings.admin_token):
        if settings.admin_token:
            raise ApiError(
                401, "the admin API needs the admin token (Authorization: Bearer <LAB_ADMIN_TOKEN>)"
            )
        raise ApiError(403, "the admin API only answers loopback callers")


@bp.get("/toggles")
def get_toggles() -> ResponseReturnValue:
    return jsonify(_toggles_json(service_context().state.refresh().toggles))


@bp.put("/toggles")
def put_toggles() -> ResponseReturnValue:
    state = service_context().state
    try:
        toggles = Toggles.from_json(_body(), base=state.refresh().toggles)
    except ToggleError as exc:
        raise ApiError(400, str(exc)) from exc
    return jsonify(_toggles_json(state.set_toggles(toggles)))


@bp.get("/world")
def get_world() -> ResponseReturnValue:
    return jsonify(service_context().state.refresh().world.model_dump())


@bp.put("/world")
def put_world() -> ResponseReturnValue:
    state = service_context().state
    try:
        world = World.from_json(_body(), base=state.refresh().world)
    except WorldError as exc:
        raise ApiError(400, str(exc)) from exc
    return jsonify(state.set_world(world).model_dump())


def _toggles_json(toggles: Toggles) -> dict[str, object]:
    return {"toggles": toggles.model_dump(), "label": toggles.label()}


def _body() -> object:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes; silent=True covers ValueError only
        body = None
    if body is None:
        raise ApiError(400, "expected a JSON object body (Content-Type: application/json)")
    return body
