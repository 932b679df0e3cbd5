"""A rate limiter shared by every replica, kept in PostgreSQL (table `rate_limits`, migration 0007).

GCRA (the generic cell rate algorithm): each key stores the theoretical arrival time (TAT) of its
next request. A request is allowed when TAT - now stays within the window; allowing it moves TAT on
by window / limit. So `limit` requests may come at once, then one per window / limit: a smooth
limit with no burst at window edges. One upsert decides atomically, under the row lock, so
concurrent requests cannot all slip through; the database's clock is the only clock.

No well-kept library fits: `limits` and slowapi keep counters in memory, Redis, Memcached or
MongoDB, none of which the platform runs; this is one statement on the database it already has.
"""

from __future__ import annotations

import itertools
import math

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Rows whose TAT has passed say nothing a missing row would not: delete them now and then.
PURGE_EVERY = 500
_calls = itertools.count(1)

_HIT = text(
    """
    INSERT INTO rate_limits AS r (key, tat) VALUES (:key, now() + make_interval(secs => :step))
    ON CONFLICT (key) DO UPDATE SET tat = greatest(r.tat, now()) + make_interval(secs => :step)
        WHERE greatest(r.tat, now()) + make_interval(secs => :step) <= now() + make_interval(secs => :window)
    RETURNING tat
    """
)
_WAIT = text(
    "SELECT extract(epoch FROM tat - now() - make_interval(secs => :window) + make_interval(secs => :step)) "
    "FROM rate_limits WHERE key = :key"
)
_PURGE = text("DELETE FROM rate_limits WHERE tat < now() - interval '1 minute'")


async def hit(session: AsyncSession, key: str, *, limit: int, window_seconds: float) -> int:
    """Count one request for `key` and commit; 0 when allowed, else the seconds until one would be."""
    step = window_seconds / limit
    params = {"key": key, "step": step, "window": float(window_seconds)}
    conn = await session.connection()
    allowed = (await conn.execute(_HIT, params)).first() is not None
    wait = 0.0
    if not allowed:
        wait = float((await conn.execute(_WAIT, params)).scalar_one() or 0.0)
    if next(_calls) % PURGE_EVERY == 0:
        await conn.execute(_PURGE)
    await session.commit()
    return 0 if allowed else max(1, math.ceil(wait))
