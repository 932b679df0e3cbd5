"""Throttles for the anonymous routes, kept in PostgreSQL so every API replica shares them.

Each is decided *before* any password is hashed, in one short transaction that the caller commits
at once, so the database connection goes back to the pool while bcrypt runs.

* Registration: fixed windows of `register_window_seconds`, one counter per client address and one
  for everybody (each a row keyed by the window): over either limit answers 429.
* Login, per client address: every attempt counts as a failure until it succeeds (so concurrent
  guesses cannot all pass before the first failure is written); at `login_max_failures_per_address`
  the address is locked for 2, 4, 8 ... seconds from that failure (at most 15 minutes). A lock on
  an address locks no account out: the owner logs in from anywhere else.
* Login, per account: no lock. After `login_max_failures_per_account` failures each further
  attempt waits for its turn, turns spaced 1, 2, 4 ... seconds apart (at most
  `login_max_spacing_seconds`): guessing slows down exponentially, concurrent guesses queue, and
  the right password still gets in at its turn. An attempt whose turn is more than
  `login_max_wait_seconds` away answers 429 with the time to come back.
* Counters are forgiven after `login_failure_window_seconds` without an attempt; every throttle
  write also deletes up to 100 rows that nothing needs any more (an index on `updated_at`), so
  the table stays as small as the set of addresses and accounts seen lately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors
from healthcare.models import LoginThrottle
from healthcare.settings import Settings

MAX_ADDRESS_LOCK_SECONDS = 900
PURGE_BATCH = 100
TOO_MANY_LOGINS = "too many failed logins; try again later"
TOO_MANY_REGISTRATIONS = "too many registrations; try again later"


@dataclass(frozen=True)
class _Row:
    key: str
    failures: int
    locked_until: datetime | None


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


async def _purge(session: AsyncSession, *, now: datetime, settings: Settings) -> None:
    """Delete rows no throttle reads any more; rows another request holds are left for later."""
    older_than = now - timedelta(
        seconds=max(settings.login_failure_window_seconds, settings.register_window_seconds)
    )
    stale = (
        select(LoginThrottle.key)
        .where(
            LoginThrottle.updated_at < older_than,
            (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < now),
        )
        .limit(PURGE_BATCH)
        .with_for_update(skip_locked=True)
    )
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(stale.scalar_subquery())))


# -- registration --------------------------------------------------------------------------------
async def check_registration(
    session: AsyncSession, *, client_ip: str | None, settings: Settings, now: datetime
) -> None:
    """Count this registration in its windows; errors.RateLimited if either is over its limit."""
    window = settings.register_window_seconds
    index = int(now.timestamp()) // window
    ends = datetime.fromtimestamp((index + 1) * window, now.tzinfo)
    limits = {
        f"register:ip:{client_ip or 'unknown'}:{index}": settings.register_max_per_address,
        f"register:all:{index}": settings.register_max_total,
    }
    stmt = insert(LoginThrottle).values(
        [{"key": key, "failures": 1, "locked_until": ends, "updated_at": now} for key in sorted(limits)]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[LoginThrottle.key],
        set_={"failures": LoginThrottle.failures + 1, "updated_at": now},
    ).returning(LoginThrottle.key, LoginThrottle.failures)
    counts = {row.key: row.failures for row in (await session.execute(stmt)).all()}
    await _purge(session, now=now, settings=settings)
    if any(counts[key] > limit for key, limit in limits.items()):
        await session.commit()
        raise errors.RateLimited(
            TOO_MANY_REGISTRATIONS, retry_after_seconds=_retry_after((ends - now).total_seconds())
        )


# -- login ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoginAttempt:
    account_key: str
    address_key: str
    wait_seconds: float  # how long to wait for this attempt's turn before checking the password


def login_keys(email: str, client_ip: str | None) -> tuple[str, str]:
    return f"acct:{email}", f"ip:{client_ip or 'unknown'}"


async def _lock(
    session: AsyncSession, keys: list[str], *, now: datetime, quiet_since: datetime
) -> dict[str, _Row]:
    """Make and row-lock each key's row (in key order, so concurrent attempts cannot deadlock); a row
    without an attempt since `quiet_since` reads as fresh (its failures are forgiven)."""
    stmt = insert(LoginThrottle).values(
        [{"key": key, "failures": 0, "updated_at": now} for key in sorted(keys)]
    )
    # A no-op update: it locks the existing row, and RETURNING gives its current values.
    stmt = stmt.on_conflict_do_update(
        index_elements=[LoginThrottle.key], set_={"key": stmt.excluded.key}
    ).returning(
        LoginThrottle.key, LoginThrottle.failures, LoginThrottle.locked_until, LoginThrottle.updated_at
    )
    rows = {}
    for r in (await session.execute(stmt)).all():
        quiet = r.updated_at < quiet_since
        rows[r.key] = _Row(r.key, 0 if quiet else r.failures, None if quiet else r.locked_until)
    return rows


async def begin_login(
    session: AsyncSession, *, email: str, client_ip: str | None, settings: Settings, now: datetime
) -> LoginAttempt:
    """Count the attempt (as a failure, until `login_succeeded` says otherwise) and give it its turn;
    errors.RateLimited for a locked address or a turn too far off. The caller commits."""
    account_key, address_key = login_keys(email, client_ip)
    quiet_since = now - timedelta(seconds=settings.login_failure_window_seconds)
    rows = await _lock(session, [account_key, address_key], now=now, quiet_since=quiet_since)
    address, account = rows[address_key], rows[account_key]

    if address.locked_until is not None and address.locked_until > now:
        await session.commit()
        raise errors.RateLimited(
            TOO_MANY_LOGINS, retry_after_seconds=_retry_after((address.locked_until - now).total_seconds())
        )
    excess = account.failures + 1 - settings.login_max_failures_per_account
    turn = now
    if excess > 0:
        spacing = min(2 ** (excess - 1), settings.login_max_spacing_seconds)
        previous = account.locked_until or now
        turn = max(now, previous + timedelta(seconds=spacing))
        if (turn - now).total_seconds() > settings.login_max_wait_seconds:
            await session.commit()  # refused before its turn: not counted, no turn taken
            raise errors.RateLimited(
                TOO_MANY_LOGINS, retry_after_seconds=_retry_after((turn - now).total_seconds())
            )

    address_failures = address.failures + 1
    address_lock = None
    if address_failures >= settings.login_max_failures_per_address:
        lock = min(
            2 ** (address_failures - settings.login_max_failures_per_address + 1), MAX_ADDRESS_LOCK_SECONDS
        )
        address_lock = now + timedelta(seconds=lock)
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == address_key)
        .values(failures=address_failures, locked_until=address_lock, updated_at=now)
    )
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == account_key)
        .values(failures=account.failures + 1, locked_until=turn, updated_at=now)
    )
    await _purge(session, now=now, settings=settings)
    return LoginAttempt(account_key, address_key, (turn - now).total_seconds())


async def login_failed(
    session: AsyncSession, attempt: LoginAttempt, *, settings: Settings, now: datetime
) -> None:
    """The lock of an address at its threshold runs from the failure, not from the attempt's start:
    on a busy machine the password check can take longer than the first lock lasts. The caller commits."""
    threshold = settings.login_max_failures_per_address
    lock = func.least(func.power(2, LoginThrottle.failures - threshold + 1), MAX_ADDRESS_LOCK_SECONDS)
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == attempt.address_key, LoginThrottle.failures >= threshold)
        .values(
            locked_until=func.greatest(
                LoginThrottle.locked_until, now + func.make_interval(0, 0, 0, 0, 0, 0, lock)
            )
        )
    )


async def login_succeeded(session: AsyncSession, attempt: LoginAttempt, *, settings: Settings) -> None:
    """The account's slate is wiped; the address's count gives back this attempt. The caller commits."""
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == attempt.account_key))
    await undo_attempt(session, attempt, settings=settings, account=False)


async def undo_attempt(
    session: AsyncSession, attempt: LoginAttempt, *, settings: Settings, account: bool = True
) -> None:
    """An attempt that never reached the password check (the hash queue was full) counts for nothing."""
    keys = [attempt.address_key, *([attempt.account_key] if account else [])]
    remaining = func.greatest(LoginThrottle.failures - 1, 0)
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key.in_(keys))
        .values(
            failures=remaining,
            # Below its threshold again, the address is no longer locked.
            locked_until=case(
                (
                    (LoginThrottle.key == attempt.address_key)
                    & (remaining < settings.login_max_failures_per_address),
                    None,
                ),
                else_=LoginThrottle.locked_until,
            ),
        )
    )
