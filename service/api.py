"""The lead API: ``/api/leads``, ``/api/leads/<id>`` and ``/api/stats``.

Each view reads like the article: load (lazy or eager), through the caches the toggles switch
on, then the side effects (inline or enqueued).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import jobs
from service.caches import AppCache, RedisCache
from service.errors import ApiError
from service.lead_loader import LeadQuery, LoaderStrategy, load_one, load_page
from service.models import Lead, LeadMetadata, Tag, User
from service.offload import Outcome, offload_or_call
from service.request_scope import current_toggles
from service.runtime_context import lab_service, request_session
from service.schemas import LeadCreate, LeadListQuery, LeadPatch, field_errors
from service.stats import compute_stats

bp = Blueprint("api", __name__, url_prefix="/api")


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
    lead = _cached_read(
        f"leads:detail:{lead_id}",
        lambda: load_one(lead_id, session=request_session(), strategy=_strategy()),
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
    session.commit()
    _invalidate_caches()
    outcomes = [
        _side_effect(jobs.send_owner_email, lead_id=lead.id),
        _side_effect(jobs.track_event, name="lead.created", properties={"lead_id": lead.id}),
        _side_effect(jobs.enrich_lead, lead_id=lead.id),
    ]
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
    session = request_session()
    lead = session.get(Lead, lead_id)
    if lead is None:
        raise ApiError(404, f"lead {lead_id} does not exist", field="id")
    previous = lead.status
    for name, value in changes.items():
        setattr(lead, name, value.value if hasattr(value, "value") else value)
    session.commit()
    _invalidate_caches()
    outcomes = [
        _side_effect(
            jobs.track_event,
            name="lead.updated",
            properties={"lead_id": lead_id, "from": previous, "to": lead.status},
        )
    ]
    if lead.status != previous:
        outcomes.append(_side_effect(jobs.send_owner_email, lead_id=lead_id))
    updated = load_one(lead_id, session=_fresh(session), strategy=LoaderStrategy.SELECTIN)
    return jsonify({**(updated or {}), "side_effects": _outcomes_json(outcomes)})


# --- the switched code paths ------------------------------------------------------------------
def _strategy() -> LoaderStrategy:
    """Lazy vs eager: the ``eager_loading`` toggle."""
    return lab_service().eager_strategy if current_toggles().eager_loading else LoaderStrategy.LAZY


def _cached_read(key: str, compute: Any) -> Any:
    """Cache-aside in Redis (L1) when ``redis_cache`` is on; straight to the database when off."""
    if not current_toggles().redis_cache:
        return compute()
    cache: RedisCache = lab_service().redis_cache
    return cache.get_or_compute(key, compute)


def _computed(key: str, compute: Any) -> Any:
    """Computed results from this process's memory (L2) when ``app_cache`` is on."""
    if not current_toggles().app_cache:
        return compute()
    cache: AppCache = lab_service().app_cache
    return cache.get_or_compute(key, compute)


def _side_effect(task: Any, **kwargs: Any) -> Outcome:
    """Inline or enqueued: the ``async_offload`` toggle."""
    service = lab_service()
    return offload_or_call(
        task,
        offload=current_toggles().async_offload,
        queue=service.queue,
        tracer=service.telemetry.tracer,
        **kwargs,
    )


def _track_read(name: str, properties: dict[str, Any]) -> None:
    """Reads send an analytics event: the blocking third-party call on the read path."""
    _side_effect(jobs.track_event, name=name, properties=properties)


def _invalidate_caches() -> None:
    service = lab_service()
    service.redis_cache.invalidate()
    service.app_cache.clear()
    service.state.bump_app_cache_generation()


# --- helpers ----------------------------------------------------------------------------------
def _page_json(query: LeadQuery) -> dict[str, Any]:
    page = load_page(query, session=request_session(), strategy=_strategy())
    return {"leads": page.leads, "total": page.total, "limit": query.limit, "offset": query.offset}


def _list_query() -> LeadListQuery:
    try:
        return LeadListQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "invalid query parameters", fields=field_errors(exc)) from exc


def _json_body() -> Any:
    if not request.is_json:
        raise ApiError(
            415 if request.data else 400, "expected a JSON body with Content-Type: application/json"
        )
    body = request.get_json(silent=True)
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
