"""A tiny Flask + SQLAlchemy library app, standing in for *someone else's* service.

It is not the lab's service: the telemetry tests use it to exercise the ``spans`` fixture and the
span budgets the way an outside project would. It has the classic mistakes on purpose:

* ``GET /authors`` lazy-loads each author's books (1 + N statements);
* ``GET /books`` lazy-loads each book's author (a many-to-one N+1);
* ``GET /authors/eager`` is the fix, ``selectinload(Author.books)`` (2 statements);
* ``GET /authors/<id>/stats`` is cached in-process, with the lab's cache span attributes;
* ``POST /authors/<id>/welcome`` emails inline, or enqueues a job when ``OFFLOAD_EMAIL`` is set.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g, jsonify
from opentelemetry import trace
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.pool import StaticPool

from latency_lab.telemetry import vocabulary as v
from tests.telemetry.sample_app.models import Author, Base, Book, seed

WELCOME_JOB = "sample_app.jobs.send_welcome_email"


def create_app(database_url: str = "sqlite://", *, offload_email: bool = False) -> Flask:
    app = Flask(__name__)
    app.config.update(OFFLOAD_EMAIL=offload_email)
    engine = create_engine(
        database_url, poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine)
    with sessions.begin() as session:
        seed(session)
    app.extensions["library"] = {"engine": engine, "sessions": sessions, "stats_cache": {}}
    _register_routes(app)
    app.teardown_appcontext(_close_session)
    return app


def _session(app: Flask) -> Session:
    if "db" not in g:
        g.db = app.extensions["library"]["sessions"]()
    session: Session = g.db
    return session


def _close_session(_error: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def _register_routes(app: Flask) -> None:
    @app.get("/authors")
    def authors_lazy() -> Any:
        authors = _session(app).scalars(select(Author).order_by(Author.id))
        return jsonify([_author_json(author) for author in authors])

    @app.get("/authors/eager")
    def authors_eager() -> Any:
        query = select(Author).options(selectinload(Author.books)).order_by(Author.id)
        return jsonify([_author_json(author) for author in _session(app).scalars(query)])

    @app.get("/books")
    def books_lazy() -> Any:
        books = _session(app).scalars(select(Book).order_by(Book.id))
        return jsonify([{"title": book.title, "author": book.author.name} for book in books])

    @app.get("/authors/<int:author_id>/stats")
    def author_stats(author_id: int) -> Any:
        return jsonify(_cached_stats(app, author_id))

    @app.post("/authors/<int:author_id>/welcome")
    def welcome(author_id: int) -> Any:
        tracer = trace.get_tracer(__name__)
        if app.config["OFFLOAD_EMAIL"]:
            with tracer.start_as_current_span(v.SPAN_ENQUEUE) as span:
                span.set_attribute(v.JOB_FUNC, WELCOME_JOB)
            return jsonify({"queued": True}), 202
        with tracer.start_as_current_span(v.third_party_span_name(v.Provider.EMAIL)) as span:
            span.set_attribute(v.THIRD_PARTY_PROVIDER, v.Provider.EMAIL.value)
            span.set_attribute(v.THIRD_PARTY_MODE, v.CallMode.INLINE.value)
        return jsonify({"sent": True})


def _author_json(author: Author) -> dict[str, Any]:
    return {"name": author.name, "books": [book.title for book in author.books]}


def _cached_stats(app: Flask, author_id: int) -> dict[str, int]:
    cache: dict[int, dict[str, int]] = app.extensions["library"]["stats_cache"]
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(v.cache_span_name(v.CacheLayer.APP)) as span:
        span.set_attribute(v.CACHE_LAYER, v.CacheLayer.APP.value)
        hit = author_id in cache
        span.set_attribute(
            v.CACHE_OUTCOME, (v.CacheOutcome.HIT if hit else v.CacheOutcome.MISS).value
        )
    if not hit:
        count = _session(app).scalar(select(func.count()).where(Book.author_id == author_id))
        cache[author_id] = {"books": int(count or 0)}
    return cache[author_id]
