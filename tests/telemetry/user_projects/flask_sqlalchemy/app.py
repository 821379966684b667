"""Someone else's Flask-SQLAlchemy app, set up as its quickstart does (``db = SQLAlchemy(app)``):
the engine is created by the extension, lazily, on first use. ``/books`` lazy-loads authors."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, joinedload, mapped_column, relationship


class Base(DeclarativeBase):
    pass


app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
db = SQLAlchemy(app, model_class=Base)


class Author(db.Model):  # type: ignore[name-defined]
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Book(db.Model):  # type: ignore[name-defined]
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship()


@app.get("/books")
def books() -> Any:
    listing = db.session.scalars(select(Book).order_by(Book.id))
    return jsonify([{"title": b.title, "author": b.author.name} for b in listing])  # lazy


@app.get("/books/eager")
def books_eager() -> Any:
    query = select(Book).options(joinedload(Book.author)).order_by(Book.id)
    return jsonify([{"title": b.title, "author": b.author.name} for b in db.session.scalars(query)])


def seed() -> None:
    with app.app_context():
        db.create_all()
        db.session.add_all(
            Book(title=f"Book {n}", author=Author(name=f"Author {n}")) for n in range(10)
        )
        db.session.commit()
