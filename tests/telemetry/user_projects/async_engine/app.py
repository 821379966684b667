"""Someone else's asyncio code: an ``AsyncEngine`` on aiosqlite, authors loaded one by one
through ``awaitable_attrs`` (the async spelling of a lazy load) or joined up front."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, joinedload, mapped_column, relationship
from sqlalchemy.pool import StaticPool


class Base(AsyncAttrs, DeclarativeBase):
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


async def open_library() -> async_sessionmaker:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions.begin() as session:
        session.add_all(
            Book(title=f"Book {n}", author=Author(name=f"Author {n}")) for n in range(10)
        )
    return sessions


async def list_books(sessions: async_sessionmaker) -> list[dict[str, str]]:
    async with sessions() as session:
        listing = []
        for book in await session.scalars(select(Book).order_by(Book.id)):
            author = await book.awaitable_attrs.author  # one statement per book
            listing.append({"title": book.title, "author": author.name})
        return listing


async def list_books_eager(sessions: async_sessionmaker) -> list[dict[str, str]]:
    async with sessions() as session:
        query = select(Book).options(joinedload(Book.author)).order_by(Book.id)
        return [{"title": b.title, "author": b.author.name} for b in await session.scalars(query)]
