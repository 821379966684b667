"""The lead API: ``/api/leads``, ``/api/leads/<id>`` and ``/api/stats``.

Each view reads like the article: load (lazy or eager), through the caches the toggles switch
on, then the side effects (inline or enqueued). A write stores its side effects in the
transactional outbox with the lead (:mod:`latency_lab.service.outbox`), so none is lost when Redis
or a provider is down; the response's ``side_effects`` says what became of each.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from latency_lab.core.errors import ApiError, field_errors
from latency_lab.service import offload, outbox, tasks
from latency_lab.service.caches import AppCache, RedisCache
from latency_lab.service.context import request_session, service_context
from latency_lab.service.lead_loader import LoaderStrategy, load_one, load_page
from latency_lab.service.lead_page import LeadQuery
from latency_lab.service.models import Lead, LeadMetadata, Tag, User
from latency_lab.service.offload import Outcome, offload_or_call
from latency_lab.service.outbox import SideEffect, StoredEffect
from latency_lab.service.request_scope import current_loader, current_toggles
from latency_lab.service.schemas import LeadCreate, LeadListQuery, LeadPatch
from latency_lab.service.stats import compute_stats

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")
# Lead ids are 32-bit in the database: a larger one in a URL is no lead (404), not an overflow.
MAX_LEAD_ID = 2**31 - 1


# --- reads ------------------------------------------------------------------------------------
@bp.get("/leads")
def list_leads() -> ResponseReturnValue:
    params = _list_query()
    query = LeadQuery(
        limit=params.limit,
        offset=params.offset,
        status=params.status.value if params.status else None,
        tag=params.tag,
    )
    key = f"leads:list:{query.limit}:{query.offset}:{query.status or ''}:{query.tag or ''}"
    page = _cached_read(key, lambda: _page_json(query))
    _track_read("leads.list", {"count": len(page["leads"]), "limit": query.limit})
    return jsonify(page)


@bp.get("/leads/<int:lead_id>")
def get_lead(lead_id: int) -> ResponseReturnValue:
    _check_lead_id(lead_id)
    lead = _cached_read(
        f"leads:detail:{lead_id}",
        lambda: load_one(lead_id, session=request_session(), strategy=current_loader()),
    )
    if lead is None:
        raise ApiError(404, f"lead {lead_id} does not exist", field="id")
    _track_read("leads.detail", {"lead_id": lead_id})
    return jsonify(lead)


@bp.get("/stats")
def stats() -> ResponseReturnValue:
    result = _computed("stats", lambda: compute_stats(session=request_session()))
    _track_read("stats.view", {})
    return jsonify(result)


# --- writes -----------------------------------------------------------------------------------
@bp.post("/leads")
def create_lead() -> ResponseReturnValue:
    body = LeadCreate.model_validate(_json_body())
    session = request_session()
    _require_owner(session, body.owner_id)
    tags = _existing_tags(session, body.tags)
    lead = Lead(
        company=body.company,
        contact_name=body.contact_name,
        email=body.email,
        owner_id=body.owner_id,
        status=body.status.value,
        score=body.score,
        tags=tags,
    )
    lead.metadata_entries = [LeadMetadata(key=k, value=val) for k, val in body.metadata.items()]
    session.add(lead)
    session.flush()  # the lead's id, which its side effects carry
    stored = _store_side_effects(session, _creation_effects(lead.id))
    session.commit()
    _invalidate_caches()
    outcomes = _deliver(session, stored)
    if any(o.task == "enrich_lead" and o.state == "delivered" for o in outcomes):
        _invalidate_caches()  # the enrichment wrote back to the lead
    created = load_one(lead.id, session=_fresh(session), strategy=LoaderStrategy.SELECTIN)
    return jsonify({**(created or {}), "side_effects": _outcomes_json(outcomes)}), 201


@bp.patch("/leads/<int:lead_id>")
def update_lead(lead_id: int) -> ResponseReturnValue:
    body = LeadPatch.model_validate(_json_body())
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise ApiError(
            422,
            "nothing to change: send status and/or score",
            fields=[{"field": "body", "message": "expected status or score"}],
        )
    _check_lead_id(lead_id)
    session = request_session()
    lead = session.get(Lead, lead_id)
    if lead is None:
        raise ApiError(404, f"lead {lead_id} does not exist", field="id")
    previous = lead.status
    for name, value in changes.items():
        setattr(lead, name, value.value if hasattr(value, "value") else value)
    stored = _store_side_effects(session, _update_effects(lead_id, previous, lead.status))
    session.commit()
    _invalidate_caches()
    outcomes = _deliver(session, stored)
    updated = load_one(lead_id, session=_fresh(session), strategy=LoaderStrategy.SELECTIN)
    return jsonify({**(updated or {}), "side_effects": _outcomes_json(outcomes)})


# --- the switched code paths ------------------------------------------------------------------
def _cached_read(key: str, compute: Any) -> Any:
    """Cache-aside in Redis (L1) when ``redis_cache`` is on; straight to the database when off."""
    if not current_toggles().redis_cache:
        return compute()
    cache: RedisCache = service_context().redis_cache
    return cache.get_or_compute(key, compute)


def _computed(key: str, compute: Any) -> Any:
    """Computed results from this process's memory (L2) when ``app_cache`` is on."""
    if not current_toggles().app_cache:
        return compute()
    cache: AppCache = service_context().app_cache
    return cache.get_or_compute(key, compute)


def _deliver(session: Session, stored: list[StoredEffect]) -> list[Outcome]:
    """Inline or enqueued: the ``async_offload`` toggle; the outbox rows record how it went."""
    service = service_context()
    results = offload.deliver(
        stored,
        offload=current_toggles().async_offload,
        queue=service.queue,
        tracer=service.telemetry.tracer,
        available=lambda: service.state.healthy,
    )
    settlements = {
        item.event_id: settled for item, (_, settled) in zip(stored, results, strict=True)
    }
    try:
        outbox.settle(settlements, session=session)
        session.commit()
    except SQLAlchemyError:  # the rows stay pending: the relay delivers them again, idempotently
        session.rollback()
        log.warning("could not settle %d outbox rows", len(settlements), exc_info=True)
    return [outcome for outcome, _ in results]


def _track_read(name: str, properties: dict[str, Any]) -> None:
    """Reads send an analytics event: the blocking third-party call on the read path.

    Best-effort: nothing is stored, so a read never writes to the database."""
    service = service_context()
    offload_or_call(
        tasks.track_event,
        offload=current_toggles().async_offload,
        queue=service.queue,
        tracer=service.telemetry.tracer,
        available=lambda: service.state.healthy,
        name=name,
        properties=properties,
    )


def _invalidate_caches() -> None:
    """After a commit. With Redis down, L1 owes the bump; other processes' L2 entries expire by
    their TTL (``LAB_APP_CACHE_TTL``)."""
    service = service_context()
    service.redis_cache.invalidate()
    service.app_cache.clear()
    if not service.state.healthy:
        return
    try:
        service.state.bump_app_cache_generation()
    except redis.RedisError as exc:
        log.warning("could not bump the L2 generation (%s): entries expire by their TTL", exc)


# --- side effects of writes -------------------------------------------------------------------
def _creation_effects(lead_id: int) -> list[SideEffect]:
    return [
        SideEffect(tasks.send_owner_email, {"lead_id": lead_id}),
        SideEffect(
            tasks.track_event,
            {"name": "lead.created", "properties": {"lead_id": lead_id}},
            best_effort=True,
        ),
        SideEffect(tasks.enrich_lead, {"lead_id": lead_id}),
    ]


def _update_effects(lead_id: int, previous: str, status: str) -> list[SideEffect]:
    effects = [
        SideEffect(
            tasks.track_event,
            {
                "name": "lead.updated",
                "properties": {"lead_id": lead_id, "from": previous, "to": status},
            },
            best_effort=True,
        )
    ]
    if status != previous:
        effects.append(SideEffect(tasks.send_owner_email, {"lead_id": lead_id}))
    return effects


def _store_side_effects(session: Session, effects: list[SideEffect]) -> list[StoredEffect]:
    """In the write's transaction. The relay leaves them to this request while it delivers."""
    hold_s = outbox.HOLD_MARGIN_S
    if not current_toggles().async_offload:  # inline: up to one provider timeout per effect
        hold_s += len(effects) * service_context().state.world.third_party_timeout_s
    return outbox.record(effects, session=session, hold_s=hold_s)


# --- helpers ----------------------------------------------------------------------------------
def _page_json(query: LeadQuery) -> dict[str, Any]:
    page = load_page(query, session=request_session(), strategy=current_loader())
    return {"leads": page.leads, "total": page.total, "limit": query.limit, "offset": query.offset}


def _check_lead_id(lead_id: int) -> None:
    if lead_id > MAX_LEAD_ID:
        raise ApiError(404, f"lead {lead_id} does not exist", field="id")


def _list_query() -> LeadListQuery:
    try:
        return LeadListQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "invalid query parameters", fields=field_errors(exc)) from exc


def _json_body() -> Any:
    if not request.is_json:  # a form's body is parsed away from request.data: look at the type
        raise ApiError(
            415 if request.mimetype else 400,
            "expected a JSON body with Content-Type: application/json",
        )
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # silent=True only covers ValueError
        body = None
    if body is None:
        raise ApiError(400, "malformed JSON body")
    if not isinstance(body, dict):
        raise ApiError(
            422,
            "expected a JSON object",
            fields=[{"field": "body", "message": "must be an object"}],
        )
    return body


def _require_owner(session: Session, owner_id: int) -> None:
    owner = session.scalar(select(User.id).where(User.id == owner_id, User.deleted_at.is_(None)))
    if owner is None:
        raise ApiError(
            422,
            "validation failed",
            fields=[{"field": "owner_id", "message": f"no sales rep with id {owner_id}"}],
        )


def _existing_tags(session: Session, names: list[str]) -> list[Tag]:
    if not names:
        return []
    wanted = sorted(set(names))
    tags = list(session.scalars(select(Tag).where(Tag.name.in_(wanted))))
    unknown = sorted(set(wanted) - {t.name for t in tags})
    if unknown:
        raise ApiError(
            422,
            "validation failed",
            fields=[{"field": "tags", "message": f"unknown tag(s): {', '.join(unknown)}"}],
        )
    return tags


def _fresh(session: Session) -> Session:
    session.expire_all()
    return session


def _outcomes_json(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    return {
        o.task: {
            k: val
            for k, val in (("state", o.state), ("detail", o.detail), ("job_id", o.job_id))
            if val is not None
        }
        for o in outcomes
    }
