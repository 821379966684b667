"""Name the ORM relationship behind each lazy-load statement.

SQLAlchemy knows, when it runs a statement, whether it is loading a relationship and which one
(``ORMExecuteState.is_relationship_load`` and ``loader_strategy_path``). The database span is
created later, at cursor level, by the SQLAlchemy instrumentation. A ``do_orm_execute`` hook puts
the relationship into a context variable around the statement (:func:`current_relationship`),
and :class:`OrmRelationshipProcessor` copies it onto every database span that starts meanwhile,
so an N+1 finding can say "``Lead.owner``, fix with ``joinedload(Lead.owner)``". The span budgets'
statement watcher (:mod:`latency_lab.telemetry.engine_watch`) reads the same variable.

:func:`instrument_engine` gives one engine OpenTelemetry database spans. It needs
``opentelemetry-instrumentation-sqlalchemy`` (the lab's extra), imported only when called, so the
span budgets import with the base install. It and :func:`is_instrumented` are the lab's only use of
that package's private API.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, NamedTuple

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import TracerProvider
from sqlalchemy import Engine, event
from sqlalchemy.orm import ORMExecuteState, Session

from latency_lab.telemetry import vocabulary as v


class RelationshipLoad(NamedTuple):
    """The relationship a statement is loading: ``Book.author``, and whether it is a list."""

    name: str
    collection: bool


_current_relationship: ContextVar[RelationshipLoad | None] = ContextVar(
    "lab_orm_relationship", default=None
)
_installed = False


def track_relationship_loads() -> None:
    """Listen on every ``Session`` (idempotent); non-relationship loads pass straight through."""
    global _installed
    if _installed:
        return
    event.listen(Session, "do_orm_execute", _on_orm_execute)
    _installed = True


def current_relationship() -> RelationshipLoad | None:
    """The relationship being loaded by the statement running now, if any."""
    return _current_relationship.get()


def _on_orm_execute(state: ORMExecuteState) -> Any:
    if not state.is_relationship_load:
        return None
    relationship = _relationship_load(state)
    if relationship is None:
        return None
    token = _current_relationship.set(relationship)
    try:
        return state.invoke_statement()
    finally:
        _current_relationship.reset(token)


def _relationship_load(state: ORMExecuteState) -> RelationshipLoad | None:
    path = state.loader_strategy_path
    if path is None or len(path) < 2:
        return None
    prop = path[-1]
    parent = getattr(prop, "parent", None)
    class_name = getattr(getattr(parent, "class_", None), "__name__", None)
    key = getattr(prop, "key", None)
    if class_name is None or key is None:
        return None
    return RelationshipLoad(f"{class_name}.{key}", bool(getattr(prop, "uselist", False)))


class OrmRelationshipProcessor(SpanProcessor):
    """Tags database spans started during a relationship load with ``lab.orm.relationship``."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        relationship = _current_relationship.get()
        if relationship is not None:
            span.set_attribute(v.ORM_RELATIONSHIP, relationship.name)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def instrument_engine(engine: Engine, tracer_provider: TracerProvider) -> None:
    """One span per statement on this engine, and on no other.

    ``SQLAlchemyInstrumentor().instrument(engine=...)`` is a process-wide singleton: a second
    engine cannot be instrumented, and it also wraps ``create_engine`` so every engine made
    afterwards (the trace store's included) would be traced. The instrumentation has no public
    per-engine call, so this builds its ``EngineTracer`` (what ``instrument`` builds for the
    engine given) directly: private API, which is why pyproject.toml bounds the instrumentation
    below its next minor release. Only the three arguments every release takes are passed.
    """
    from opentelemetry.instrumentation import sqlalchemy as sqlalchemy_instrumentation
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__ as version
    from opentelemetry.metrics import get_meter
    from opentelemetry.semconv.metrics import MetricInstruments
    from opentelemetry.trace import get_tracer

    tracer = get_tracer(sqlalchemy_instrumentation.__name__, version, tracer_provider)
    meter = get_meter(sqlalchemy_instrumentation.__name__, version)
    connections_usage = meter.create_up_down_counter(
        name=MetricInstruments.DB_CLIENT_CONNECTIONS_USAGE,
        unit="connections",
        description="connections in use",
    )
    EngineTracer(tracer, engine, connections_usage)


def is_instrumented(engine: Engine) -> bool:
    """Whether the SQLAlchemy instrumentation already listens on this engine (private API too)."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    registered = getattr(EngineTracer, "_remove_event_listener_params", [])
    return any(target() is engine for target, *_ in registered)
