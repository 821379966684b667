"""Everything one service process holds: built once by ``create_app``, reached by the routes.

``ServiceContext`` gathers the settings, telemetry, Redis connection, shared state, database
sessions, the two in-process caches, the RQ queue and the third-party client, so routes read
``service_context().redis_cache`` instead of globals.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from opentelemetry.instrumentation.utils import suppress_instrumentation
from rq import Queue
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from latency_lab.core.settings import Settings
from latency_lab.core.shared_state import SharedState, connect_redis
from latency_lab.service import tasks
from latency_lab.service.caches import AppCache, RedisCache
from latency_lab.service.db import (
    build_engine,
    create_schema,
    inject_round_trip,
    session_factory,
)
from latency_lab.service.offload import QUEUE_NAME
from latency_lab.service.providers import ThirdPartyClient
from latency_lab.telemetry import ProcessTelemetry, instrument_redis
from latency_lab.telemetry import vocabulary as v
from latency_lab.telemetry.orm import instrument_engine

EXTENSION_KEY = "latency_lab"
# Fail open fast: a dead Redis must cost a request milliseconds, not seconds. One immediate
# retry replaces a connection that broke when Redis restarted; redis-py's default (10 retries
# with backoff) would make every command against a dead Redis take seconds.
REDIS_SOCKET_TIMEOUT_S = 0.25
REDIS_RETRIES = 1


@dataclass
class ServiceContext:
    settings: Settings
    telemetry: ProcessTelemetry
    redis: redis.Redis
    state: SharedState
    engine: Engine
    sessions: sessionmaker[Session]
    redis_cache: RedisCache
    app_cache: AppCache
    queue: Queue
    third_party: ThirdPartyClient

    @classmethod
    def build(cls, settings: Settings, lab_telemetry: ProcessTelemetry) -> ServiceContext:
        """This process's dependencies. Building them records no spans: start-up is no
        request's work, and a preloaded gunicorn master must have nothing to export when it
        forks (a worker forked mid-export would inherit the export's locks, held for ever, and
        never export a span)."""
        with suppress_instrumentation():
            return cls._build(settings, lab_telemetry)

    @classmethod
    def _build(cls, settings: Settings, lab_telemetry: ProcessTelemetry) -> ServiceContext:
        client = connect_redis(
            settings.redis_url, socket_timeout_s=REDIS_SOCKET_TIMEOUT_S, retries=REDIS_RETRIES
        )
        # Redis commands are spans of the request (a store after a miss, an invalidation); a
        # lookup's and an enqueue's own commands are folded into their spans (caches, offload).
        instrument_redis(client, lab_telemetry.tracer_provider)
        state = SharedState(client, restore_lost_state=True)
        engine = build_engine(settings.resolved_database_url)
        create_schema(engine)
        instrument_engine(engine, lab_telemetry.tracer_provider)
        inject_round_trip(engine, lambda: state.world.db_round_trip_ms)
        tracer = lab_telemetry.tracer
        sessions = session_factory(engine)
        third_party = ThirdPartyClient(
            settings.resolved_thirdparty_url,
            tracer_provider=lab_telemetry.tracer_provider,
            timeout_s=lambda: state.world.third_party_timeout_s,
        )
        tasks.bind(
            tasks.TaskContext(sessions=sessions, third_party=third_party, mode=v.CallMode.INLINE)
        )
        return cls(
            settings=settings,
            telemetry=lab_telemetry,
            redis=client,
            state=state,
            engine=engine,
            sessions=sessions,
            redis_cache=RedisCache(
                client,
                ttl_s=settings.redis_cache_ttl_s,
                tracer=tracer,
                available=lambda: state.healthy,
            ),
            app_cache=AppCache(
                ttl_s=settings.app_cache_ttl_s,
                generation=lambda: state.snapshot().app_cache_generation,
                tracer=tracer,
            ),
            queue=Queue(QUEUE_NAME, connection=client),
            third_party=third_party,
        )

    def close(self) -> None:
        self.state.close()
        self.third_party.close()
        self.engine.dispose()
        self.redis.close()


def service_context() -> ServiceContext:
    service: ServiceContext = current_app.extensions[EXTENSION_KEY]
    return service


def request_session() -> Session:
    """The request's session; the request owns commit and rollback, teardown closes it."""
    from flask import g

    session: Session | None = g.get("db_session")
    if session is None:
        session = service_context().sessions()
        g.db_session = session
    return session
