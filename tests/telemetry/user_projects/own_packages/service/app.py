"""Someone else's Flask + SQLAlchemy app: the engine is made in the app factory, nobody
instruments it. ``/books`` lazy-loads each book's author (1 + 10 statements); ``/books/eager``
joins them (1 statement)."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    joinedload,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.pool import StaticPool


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Book(Base):
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship()


def create_app(database_url: str = "sqlite://") -> Flask:
    app = Flask(__name__)
    engine = create_engine(database_url, poolclass=StaticPool)
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine)
    with sessions.begin() as session:
        session.add_all(
            Book(title=f"Book {n}", author=Author(name=f"Author {n}")) for n in range(10)
        )

    @app.get("/books")
    def books() -> Any:
        with sessions() as session:
            listing = session.scalars(select(Book).order_by(Book.id))
            return jsonify([{"title": b.title, "author": b.author.name} for b in listing])  # lazy

    @app.get("/books/eager")
    def books_eager() -> Any:
        with sessions() as session:
            query = select(Book).options(joinedload(Book.author)).order_by(Book.id)
            return jsonify(
                [{"title": b.title, "author": b.author.name} for b in session.scalars(query)]
            )

    return app
