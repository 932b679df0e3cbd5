"""The login throttle's rules on the real database, at chosen instants (README, "Abuse and
availability"): an address past its threshold is locked for 2, 4, 8 ... seconds up to its cap, an
account's turns are spaced 1, 2, 4 ... seconds up to their cap, and a quiet window forgives.

Through the API these take minutes to observe; here the clock is an argument, while the counting is
the SQL the API runs (services/throttle.py), with small thresholds.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthcare import errors
from healthcare.db import session_factory
from healthcare.settings import Settings
from services import throttle

RULES = Settings(
    login_max_failures_per_address=3,
    login_max_failures_per_account=3,
    login_failure_window_seconds=900,
    login_max_spacing_seconds=8,
    login_max_wait_seconds=8.0,
)


async def _attempt(engine: AsyncEngine, email: str, address: str, at: datetime) -> throttle.LoginAttempt:
    """One failed login at `at`, as services/users.login counts it (each attempt in its own commit)."""
    async with session_factory(engine)() as session:
        try:
            attempt = await throttle.begin_login(
                session, email=email, client_ip=address, settings=RULES, now=at
            )
        finally:
            await session.commit()
        await throttle.login_failed(session, attempt, settings=RULES, now=at)
        await session.commit()
        return attempt


async def _locked_until(engine: AsyncEngine, key: str) -> datetime | None:
    async with session_factory(engine)() as session:
        sql = text("SELECT locked_until FROM login_throttle WHERE key = :key")
        value: datetime | None = (await session.execute(sql, {"key": key})).scalar_one()
        return value


async def _forget(engine: AsyncEngine, *keys: str) -> None:
    async with session_factory(engine)() as session:
        await session.execute(text("DELETE FROM login_throttle WHERE key = ANY(:keys)"), {"keys": list(keys)})
        await session.commit()


def _address() -> str:
    return f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:8]}"


async def test_an_address_past_its_threshold_is_locked_twice_as_long_each_time_up_to_the_cap(
    engine: AsyncEngine,
) -> None:
    address = _address()
    emails = [f"throttle-{uuid.uuid4().hex}@example.org" for _ in range(14)]  # no account spacing
    at = datetime.now(UTC)
    try:
        locks = []
        for email in emails:
            await _attempt(engine, email, address, at)
            until = await _locked_until(engine, f"ip:{address}")
            lock = (until - at).total_seconds() if until else 0.0
            locks.append(lock)
            at += timedelta(seconds=lock or 1)  # the next attempt comes as the lock ends
        threshold = RULES.login_max_failures_per_address
        assert locks[: threshold - 1] == [0.0] * (threshold - 1)
        assert locks[threshold - 1 : threshold + 4] == [2.0, 4.0, 8.0, 16.0, 32.0]
        assert locks[-1] == throttle.MAX_ADDRESS_LOCK_SECONDS
        # While locked, an attempt is refused before anything is counted or checked.
        with pytest.raises(errors.RateLimited):
            await _attempt(engine, emails[0], address, at - timedelta(seconds=1))
    finally:
        await _forget(engine, f"ip:{address}", *(f"acct:{e}" for e in emails))


async def test_an_accounts_turns_are_spaced_out_but_it_is_never_locked(engine: AsyncEngine) -> None:
    email = f"throttle-{uuid.uuid4().hex}@example.org"
    at = datetime.now(UTC)
    addresses = [_address() for _ in range(8)]  # one address each: no address lock
    try:
        waits = []
        for address in addresses:
            attempt = await _attempt(engine, email, address, at)
            waits.append(attempt.wait_seconds)
            at += timedelta(seconds=attempt.wait_seconds)  # each attempt comes at its turn
        threshold = RULES.login_max_failures_per_account
        assert waits == [0.0] * threshold + [1.0, 2.0, 4.0, 8.0, 8.0]
        # Guesses at the same instant queue: the next turn is 8 s off (accepted), the one after it 16 s,
        # further than login_max_wait_seconds: refused with the time to come back.
        assert (await _attempt(engine, email, addresses[0], at)).wait_seconds == 8.0
        with pytest.raises(errors.RateLimited) as refused:
            await _attempt(engine, email, addresses[1], at)
        assert refused.value.retry_after_seconds == 16
    finally:
        await _forget(engine, f"acct:{email}", *(f"ip:{a}" for a in addresses))


async def test_a_quiet_window_forgives_earlier_failures(engine: AsyncEngine) -> None:
    address = _address()
    emails = [f"throttle-{uuid.uuid4().hex}@example.org" for _ in range(4)]
    start = datetime.now(UTC)
    window = timedelta(seconds=RULES.login_failure_window_seconds)
    try:
        await _attempt(engine, emails[0], address, start)
        await _attempt(engine, emails[1], address, start + timedelta(seconds=1))
        # Still inside the window (counted from the last attempt): the third failure locks.
        inside = start + timedelta(seconds=1) + window - timedelta(seconds=1)
        await _attempt(engine, emails[2], address, inside)
        assert await _locked_until(engine, f"ip:{address}") == inside + timedelta(seconds=2)
        # A whole window without an attempt: counted from one again, so nothing is locked.
        later = inside + window + timedelta(seconds=1)
        await _attempt(engine, emails[3], address, later)
        assert await _locked_until(engine, f"ip:{address}") is None
    finally:
        await _forget(engine, f"ip:{address}", *(f"acct:{e}" for e in emails))
