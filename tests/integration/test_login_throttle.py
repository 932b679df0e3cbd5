"""The login throttle's rules on the real database, at chosen instants (README, "Security"): past the
threshold each failure doubles the lock, up to its cap; a quiet window forgives earlier failures.

Through the API these take a window (15 minutes) to observe; here the clock is an argument, while the
counting itself is the SQL upsert the API runs (services/users.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthcare.db import session_factory
from services import users

THRESHOLD = 3
WINDOW = 900


@dataclass(frozen=True)
class Row:
    failures: int
    locked_until: datetime | None


async def _fail(engine: AsyncEngine, key: str, at: datetime) -> Row:
    async with session_factory(engine)() as session:
        await users._record_failure(session, key, threshold=THRESHOLD, window_seconds=WINDOW, now=at)
        await session.commit()
        sql = text("SELECT failures, locked_until FROM login_throttle WHERE key = :key")
        failures, locked_until = (await session.execute(sql, {"key": key})).one()
        return Row(int(failures), locked_until)


async def _forget(engine: AsyncEngine, key: str) -> None:
    async with session_factory(engine)() as session:
        await session.execute(text("DELETE FROM login_throttle WHERE key = :key"), {"key": key})
        await session.commit()


def _lock(row: Row, at: datetime) -> float:
    return (row.locked_until - at).total_seconds() if row.locked_until else 0.0


async def test_each_failure_past_the_threshold_doubles_the_lock_up_to_its_cap(engine: AsyncEngine) -> None:
    key = f"acct:throttle-{uuid.uuid4().hex}@example.org"
    start = datetime.now(UTC)
    try:
        locks = []
        for n in range(THRESHOLD + 12):
            at = start + timedelta(seconds=n)  # well inside the window
            locks.append(_lock(await _fail(engine, key, at), at))
        assert locks[: THRESHOLD - 1] == [0.0] * (THRESHOLD - 1)
        assert locks[THRESHOLD - 1 : THRESHOLD + 4] == [2.0, 4.0, 8.0, 16.0, 32.0]
        assert locks[-1] == users.MAX_LOCK_SECONDS
        async with session_factory(engine)() as session:
            at = start + timedelta(seconds=THRESHOLD + 12)
            assert await users._locked_for(session, [key], at) > 0  # a locked key refuses logins
    finally:
        await _forget(engine, key)


async def test_a_quiet_window_forgives_earlier_failures(engine: AsyncEngine) -> None:
    key = f"ip:203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    start = datetime.now(UTC)
    try:
        for n in range(THRESHOLD - 1):
            row = await _fail(engine, key, start + timedelta(seconds=n))
        assert row.failures == THRESHOLD - 1
        # Still inside the window (counted from the last failure): the next one locks.
        inside = start + timedelta(seconds=THRESHOLD - 2 + WINDOW - 1)
        locked = await _fail(engine, key, inside)
        assert locked.failures == THRESHOLD and _lock(locked, inside) == 2.0
        # A whole window without a failure: the count starts again at one, and nothing is locked.
        later = inside + timedelta(seconds=WINDOW + 1)
        forgiven = await _fail(engine, key, later)
        assert forgiven.failures == 1
        async with session_factory(engine)() as session:
            assert await users._locked_for(session, [key], later) == 0
    finally:
        await _forget(engine, key)
