"""Database engine and sessions (SQLAlchemy async over asyncpg)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors
from healthcare.settings import Settings

Row = TypeVar("Row", bound=SQLModel)


def create_engine(settings: Settings, *, pre_ping: bool = True, url: str | None = None) -> AsyncEngine:
    """`pre_ping`: test a pooled connection before use, so one broken by a database restart is
    replaced transparently. Callers whose work is retried anyway (activities) skip the round trip.
    `url`: another role on the same database (migrations use the owner's, `owner_database_url`)."""
    return create_async_engine(
        url or settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=settings.db_pool_timeout_seconds,
        # Statement parameters stay out of error messages and logs: they carry patient data.
        hide_parameters=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def release_connection(session: AsyncSession) -> None:
    """End the session's (read-only) transaction before a long wait, such as a Temporal update, so
    its connection goes back to the pool meanwhile; the next statement takes one again. Under load,
    requests parked on Temporal while holding connections exhausted the pool and failed. Loaded
    objects stay usable (sessions are made with expire_on_commit=False)."""
    await session.commit()


async def add_unique(session: AsyncSession, row: Row, *, conflict: str) -> Row:
    """Add a new row and flush it; a unique violation becomes errors.Conflict(`conflict`), after
    rolling the session back. The caller commits."""
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise errors.Conflict(conflict) from exc
    return row


async def page(
    session: AsyncSession,
    model: type[Row],
    *,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    """One page of a table's rows and how many match in all: what every list answer needs
    ({items, total, limit, offset}). `order_by` must end with a unique column, so pages do not
    overlap."""
    total = await session.scalar(select(func.count()).select_from(model).where(*where))
    rows = (
        await session.exec(select(model).where(*where).order_by(*order_by).limit(limit).offset(offset))
    ).all()
    return list(rows), int(total or 0)
