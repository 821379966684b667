"""The sample app's models: authors and their books (one-to-many, many-to-one back)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def seed(session: Session, *, authors: int = 8, books_per_author: int = 2) -> None:
    """A small deterministic library; the caller commits."""
    for number in range(1, authors + 1):
        author = Author(name=f"Author {number}")
        author.books = [Book(title=f"Book {number}.{index}") for index in range(books_per_author)]
        session.add(author)
