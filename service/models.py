"""The lead platform's data: sales reps (users), leads, tags and per-lead metadata.

Relationships are lazy by default, as in most ORMs: touching ``lead.owner``, ``lead.tags`` or
``lead.metadata_entries`` on a lead loaded without options costs one statement each. That is the
N+1 of the article, and :mod:`latency_lab.service.lead_loader` is where it is fixed.

``Lead.owner`` skips soft-deleted reps, as CRMs commonly do. Because of that extra condition,
SQLAlchemy cannot answer the lazy load from its identity map: every lead's owner costs a
statement, exactly like the article's ``User.findById(lead.userId)`` loop (1 + 3N statements).

``OutboxEvent`` is the transactional outbox: a write stores its side effects (email, analytics,
enrichment) in the same transaction as the lead, so none is lost when Redis or a provider is
down (:mod:`latency_lab.service.outbox` says how they travel on).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class LeadStatus(enum.StrEnum):
    """The sales funnel, in order."""

    NEW = "new"
    CONTACTED = "contacted"
    QUALIFIED = "qualified"
    PROPOSAL = "proposal"
    WON = "won"
    LOST = "lost"


lead_tags = Table(
    "lead_tags",
    Base.metadata,
    Column("lead_id", ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    """A sales rep who owns leads."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    region: Mapped[str] = mapped_column(String(40))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60), unique=True)


class LeadMetadata(Base):
    """One key/value about a lead: source, campaign, region..."""

    __tablename__ = "lead_metadata"
    __table_args__ = (UniqueConstraint("lead_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(60))
    value: Mapped[str] = mapped_column(String(200))


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (Index("ix_leads_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    company: Mapped[str] = mapped_column(String(200))
    contact_name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=LeadStatus.NEW.value)
    score: Mapped[int] = mapped_column(Integer, default=0)
    industry: Mapped[str | None] = mapped_column(String(80), default=None)
    company_size: Mapped[str | None] = mapped_column(String(40), default=None)
    enriched_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    owner: Mapped[User | None] = relationship(
        User,
        primaryjoin=lambda: and_(foreign(Lead.owner_id) == User.id, User.deleted_at.is_(None)),
        lazy="select",
        viewonly=True,
    )
    tags: Mapped[list[Tag]] = relationship(secondary=lead_tags, lazy="select", order_by=Tag.name)
    metadata_entries: Mapped[list[LeadMetadata]] = relationship(
        lazy="select", order_by=LeadMetadata.key, cascade="all, delete-orphan"
    )


class OutboxState(enum.StrEnum):
    """Where one side effect stands; ``available_at`` says when the relay looks at it next."""

    PENDING = "pending"  # stored, not (yet) handed to RQ: the relay enqueues it when due
    DISPATCHED = "dispatched"  # enqueued: RQ retries it; the job marks it delivered
    DELIVERED = "delivered"  # the provider accepted it (inline, or in a job)
    FAILED = "failed"  # RQ gave up (the job is in the failed-job registry)
    DROPPED = "dropped"  # a best-effort event (analytics) whose inline call failed


class OutboxEvent(Base):
    """One side effect of a write, stored with the write; ``event_id`` is its idempotency key."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_available", "state", "available_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    task: Mapped[str] = mapped_column(String(60))
    arguments: Mapped[str] = mapped_column(Text)  # JSON keyword arguments, without event_id
    trace_context: Mapped[str] = mapped_column(Text, default="{}")  # W3C carrier, JSON
    state: Mapped[str] = mapped_column(String(12), default=OutboxState.PENDING.value)
    dispatches: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(300), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    available_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
