"""Database engine and sessions (SQLAlchemy async over asyncpg)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare.settings import Settings


def create_engine(settings: Settings, *, pre_ping: bool = True) -> AsyncEngine:
    """`pre_ping`: test a pooled connection before use, so one broken by a database restart is
    replaced transparently. Callers whose work is retried anyway (activities) skip the round trip."""
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=10,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def release_connection(session: AsyncSession) -> None:
    """End the session's (read-only) transaction before a long wait, such as a Temporal update, so
    its connection goes back to the pool meanwhile; the next statement takes one again. Under load,
    requests parked on Temporal while holding connections exhausted the pool and failed. Loaded
    objects stay usable (sessions are made with expire_on_commit=False)."""
    await session.commit()
