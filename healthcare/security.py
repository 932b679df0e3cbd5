"""Password hashing (bcrypt through passlib) and access tokens (PyJWT, one pinned algorithm)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

import jwt
from passlib.context import CryptContext

from healthcare import errors
from healthcare.settings import Settings

HASH_THREAD_NICENESS = 10
T = TypeVar("T")


def _lower_priority() -> None:
    # Linux schedules threads one by one: a hashing thread under SCHED_IDLE runs only on CPU that
    # request handling (this process's event loop, the database) leaves idle, so a login burst
    # cannot starve reads, and logins still use every idle cycle. Nice 10 where SCHED_IDLE is refused.
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, tid, HASH_THREAD_NICENESS)


class HashQueue:
    """The bcrypt threads and a bound on the jobs waiting for them.

    bcrypt releases the GIL while hashing, so one thread per core keeps every core busy with logins
    while the event loop stays free for other requests. A burst beyond `limit` jobs (waiting or
    running) is refused at once, with a hint when to retry, instead of queueing without end: each
    waiting job holds a request open, and the ones at the back would time out anyway.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pending = 0
        self.executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="bcrypt", initializer=_lower_priority
        )

    async def run(self, job: Callable[[], T], *, limit: int) -> T:
        if self.pending >= limit:
            raise errors.DependencyUnavailable(
                "too many sign-ins at once; try again shortly",
                retry_after_seconds=max(1, math.ceil(self.pending / self.workers / 4)),
            )
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, job)
        finally:
            self.pending -= 1


HASH_QUEUE = HashQueue(os.cpu_count() or 2)
_HASH_POOL = HASH_QUEUE.executor
DEFAULT_QUEUE_LIMIT = 32


@lru_cache(maxsize=4)
def _context(rounds: int) -> CryptContext:
    return CryptContext(schemes=["bcrypt"], bcrypt__rounds=rounds, deprecated="auto")


def hash_password(password: str, *, rounds: int) -> str:
    return str(_context(rounds).hash(password))


def verify_password(password: str, password_hash: str, *, rounds: int) -> bool:
    try:
        return bool(_context(rounds).verify(password, password_hash))
    except ValueError:  # a malformed stored hash never authenticates
        return False


async def hash_password_async(password: str, *, rounds: int, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> str:
    """Raises errors.DependencyUnavailable (503, Retry-After) when `queue_limit` jobs are queued."""
    return await HASH_QUEUE.run(lambda: hash_password(password, rounds=rounds), limit=queue_limit)


async def verify_password_async(
    password: str, password_hash: str, *, rounds: int, queue_limit: int = DEFAULT_QUEUE_LIMIT
) -> bool:
    """Raises errors.DependencyUnavailable (503, Retry-After) when `queue_limit` jobs are queued."""
    return await HASH_QUEUE.run(
        lambda: verify_password(password, password_hash, rounds=rounds), limit=queue_limit
    )


@lru_cache(maxsize=4)
def dummy_hash(rounds: int) -> str:
    """Verified against when the email is unknown, so both answers take the same time."""
    return hash_password(uuid.uuid4().hex, rounds=rounds)


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    role: str
    expires_at: datetime
    # The account's token version when the token was issued (users.token_version): a password
    # change, deactivation or role change increments it, which revokes every older token.
    token_version: int = 0


class InvalidToken(Exception):
    """Why, in one word, never the token: `expired` (past `exp` or the age cap) or `invalid`."""


def issue_token(
    *, user_id: uuid.UUID, role: str, settings: Settings, token_version: int = 0, now: datetime | None = None
) -> str:
    now = now or datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "role": role,
        "tv": token_version,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings.jwt_ttl_seconds)).timestamp()),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm)


def _payload(token: str, settings: Settings, *, verify_exp: bool) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(
        token,
        settings.jwt_secret.get_secret_value(),
        algorithms=[settings.jwt_algorithm],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"], "verify_exp": verify_exp},
    )
    return payload


def decode_token(token: str, *, settings: Settings, now: datetime | None = None) -> TokenClaims:
    """Accepts only our algorithm, our issuer and audience, and an unexpired token with every claim,
    issued at most HC_JWT_MAX_AGE_SECONDS ago whatever its `exp` says."""
    try:
        payload = _payload(token, settings, verify_exp=True)
        claims = TokenClaims(
            user_id=uuid.UUID(payload["sub"]),
            role=str(payload["role"]),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
            token_version=int(payload.get("tv", 0)),
        )
        issued = int(payload["iat"])
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("expired") from exc
    except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
        raise InvalidToken("invalid") from exc
    age = (now or datetime.now(UTC)).timestamp() - issued
    if age > settings.jwt_max_age_seconds or payload["exp"] - issued > settings.jwt_max_age_seconds:
        raise InvalidToken("expired")
    return claims


def token_subject(token: str, *, settings: Settings) -> uuid.UUID | None:
    """The account a token names, when its signature is ours (even if it expired); else None. For
    auditing refused tokens only: it never authenticates anyone."""
    try:
        return uuid.UUID(_payload(token, settings, verify_exp=False)["sub"])
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        return None
