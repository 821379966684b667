"""``/api/stats``: the computed aggregates the L2 cache keeps (counts by status, owner and tag,
the funnel, the average score)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from latency_lab.service.models import Lead, LeadStatus, Tag, User, lead_tags

FUNNEL = (
    LeadStatus.NEW,
    LeadStatus.CONTACTED,
    LeadStatus.QUALIFIED,
    LeadStatus.PROPOSAL,
    LeadStatus.WON,
)
TOP_OWNERS = 10


def compute_stats(*, session: Session) -> dict[str, Any]:
    by_status = {
        status: count
        for status, count in session.execute(
            select(Lead.status, func.count()).group_by(Lead.status).order_by(Lead.status)
        )
    }
    by_owner = [
        {
            "owner_id": owner_id,
            "name": name,
            "leads": count,
            # PostgreSQL's avg() is a Decimal (JSON would make it a string); SQLite's a float.
            "average_score": round(float(avg or 0), 2),
        }
        for owner_id, name, count, avg in session.execute(
            select(User.id, User.name, func.count(Lead.id), func.avg(Lead.score))
            .join(Lead, Lead.owner_id == User.id)
            .group_by(User.id, User.name)
            .order_by(func.count(Lead.id).desc(), User.id)
            .limit(TOP_OWNERS)
        )
    ]
    by_tag = {
        name: count
        for name, count in session.execute(
            select(Tag.name, func.count())
            .join(lead_tags, lead_tags.c.tag_id == Tag.id)
            .group_by(Tag.name)
            .order_by(Tag.name)
        )
    }
    average_score = session.scalar(select(func.avg(Lead.score)))
    total = sum(by_status.values())
    return {
        "total": total,
        "by_status": by_status,
        "top_owners": by_owner,
        "by_tag": by_tag,
        "funnel": _funnel(by_status),
        "average_score": round(float(average_score or 0), 2),
        "win_rate": _ratio(
            by_status.get("won", 0), by_status.get("won", 0) + by_status.get("lost", 0)
        ),
    }


def _funnel(by_status: dict[str, int]) -> list[dict[str, Any]]:
    """How many leads reached each stage (a won lead passed through every earlier one)."""
    stages = []
    for index, stage in enumerate(FUNNEL):
        reached = sum(by_status.get(s.value, 0) for s in FUNNEL[index:])
        stages.append({"stage": stage.value, "reached": reached})
    return stages


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
