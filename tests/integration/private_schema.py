"""Private copies of tables, in a schema of their own, for tests whose rows nothing else may see.

The outbox is served by the worker's relay, which publishes every row of `public.outbox` to the real
topics (and so to billing and analytics). Tests that write outbox rows, or drive the relay
themselves, work on a copy instead: an engine whose search_path puts the copy first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from healthcare.settings import Settings


@asynccontextmanager
async def private_tables(engine: AsyncEngine, settings: Settings, *tables: str) -> AsyncIterator[AsyncEngine]:
    """Copies of `tables` (columns, defaults, checks, indexes, exclusion constraints; no foreign
    keys), plus the outbox's NOTIFY trigger; dropped on exit. `engine` is the owner's (the app role
    may not create schemas); the copies are used as the owner too."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
        for table in tables:
            await conn.execute(text(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"))
        if "outbox" in tables:
            await conn.execute(
                text(
                    f"CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox "
                    "FOR EACH STATEMENT EXECUTE FUNCTION public.outbox_notify()"
                )
            )
    private = create_async_engine(
        settings.owner_database_url, connect_args={"server_settings": {"search_path": f"{schema},public"}}
    )
    try:
        yield private
    finally:
        await private.dispose()
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
