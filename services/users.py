"""Accounts: registration, login with throttling, admin management of users."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, func, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors, ratelimit, security
from healthcare.db import add_unique, page, release_connection
from healthcare.models import LoginThrottle, Role, User
from healthcare.settings import Settings
from services import audit
from services.context import RequestContext, require_actor

# Back-off: after the threshold a key is locked for 2, 4, 8 ... seconds, at most MAX_LOCK_SECONDS.
MAX_LOCK_SECONDS = 900
LOGIN_FAILED = "invalid email or password"


async def create_user(
    session: AsyncSession, *, email: str, password: str, role: Role, settings: Settings
) -> User:
    """Insert an account (flushed, not committed); the audited use cases below build on it."""
    user = User(
        email=email,
        password_hash=await security.hash_password_async(password, rounds=settings.bcrypt_rounds),
        role=role.value,
    )
    await add_unique(session, user, conflict="a user with this email already exists")
    return user


async def register(
    session: AsyncSession, ctx: RequestContext, *, email: str, password: str, settings: Settings
) -> User:
    """Self-registration: always the `patient` role; the new account is the actor of its record."""
    user = await create_user(session, email=email, password=password, role=Role.patient, settings=settings)
    await audit.record(
        session,
        ctx,
        action="register",
        resource_type="user",
        resource_id=user.id,
        actor_id=user.id,
        actor_role=user.role,
    )
    return user


async def add_user(
    session: AsyncSession,
    ctx: RequestContext,
    *,
    email: str,
    password: str,
    role: Role,
    settings: Settings,
    actor_role: str | None = None,
) -> User:
    """An account made by an admin (or by the console, `actor_role="cli"`)."""
    user = await create_user(session, email=email, password=password, role=role, settings=settings)
    await audit.record(
        session, ctx, action="create", resource_type="user", resource_id=user.id, actor_role=actor_role
    )
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def _locked_for(session: AsyncSession, keys: list[str], now: datetime) -> int:
    rows = (await session.exec(select(LoginThrottle).where(LoginThrottle.key.in_(keys)))).all()
    waits = [
        (row.locked_until - now).total_seconds()
        for row in rows
        if row.locked_until and row.locked_until > now
    ]
    return int(max(waits, default=0)) + 1 if waits else 0


async def _record_failure(
    session: AsyncSession, key: str, *, threshold: int, window_seconds: int, now: datetime
) -> None:
    stale = now - timedelta(seconds=window_seconds)
    stmt = insert(LoginThrottle).values(key=key, failures=1, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[LoginThrottle.key],
        set_={
            # A quiet window forgives earlier failures: the count starts again.
            "failures": case((LoginThrottle.updated_at < stale, 1), else_=LoginThrottle.failures + 1),
            "updated_at": now,
        },
    ).returning(LoginThrottle.failures)
    failures = int((await session.execute(stmt)).scalar_one())
    if failures >= threshold:
        lock = min(2 ** (failures - threshold + 1), MAX_LOCK_SECONDS)
        await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key)
            .values(locked_until=now + timedelta(seconds=lock))
        )


async def login(
    session: AsyncSession, ctx: RequestContext, *, email: str, password: str, settings: Settings
) -> tuple[str, User]:
    """Returns an access token. Unknown email and wrong password answer alike, in the same time."""
    now = datetime.now(UTC)
    account_key, address_key = f"acct:{email}", f"ip:{ctx.client_ip or 'unknown'}"
    wait = await _locked_for(session, [account_key, address_key], now)
    if wait:
        raise errors.RateLimited("too many failed logins; try again later", retry_after_seconds=wait)
    user = await session.scalar(select(User).where(func.lower(User.email) == email))
    stored = user.password_hash if user else security.dummy_hash(settings.bcrypt_rounds)
    valid = await security.verify_password_async(password, stored, rounds=settings.bcrypt_rounds)
    if not (user and valid and user.is_active):
        # The back-off counts from when the failure is known: on a loaded machine the hash can wait
        # seconds for CPU, and a lock counted from the request's arrival would already be over.
        now = datetime.now(UTC)
        window = settings.login_failure_window_seconds
        # The lock runs from the failure, not from the request's start: hashing on a busy machine
        # can take longer than the first lock lasts.
        now = datetime.now(UTC)
        await _record_failure(
            session,
            account_key,
            threshold=settings.login_max_failures_per_account,
            window_seconds=window,
            now=now,
        )
        await _record_failure(
            session,
            address_key,
            threshold=settings.login_max_failures_per_address,
            window_seconds=window,
            now=now,
        )
        await audit.record(
            session,
            ctx,
            action="login",
            resource_type="user",
            resource_id=user.id if user else None,
            outcome="failed",
            actor_id=user.id if user else None,
            actor_role=user.role if user else None,
        )
        raise errors.Unauthorized(LOGIN_FAILED)
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == account_key))
    await audit.record(
        session,
        ctx,
        action="login",
        resource_type="user",
        resource_id=user.id,
        actor_id=user.id,
        actor_role=user.role,
    )
    token = security.issue_token(
        user_id=user.id, role=user.role, settings=settings, token_version=user.token_version
    )
    return token, user


async def list_users(
    session: AsyncSession, *, limit: int, offset: int, role: Role | None = None
) -> tuple[list[User], int]:
    conditions = [User.role == role.value] if role else []
    return await page(
        session, User, where=conditions, order_by=[User.created_at, User.id], limit=limit, offset=offset
    )


async def update_user(
    session: AsyncSession,
    ctx: RequestContext,
    user_id: uuid.UUID,
    *,
    is_active: bool | None,
    role: Role | None,
) -> User:
    """Deactivate, reactivate or change the role of an account. A deactivation or a role change
    revokes every token the account holds (its token version moves on), so the change applies at
    once; the record says what the account became."""
    user = await session.get(User, user_id)
    if user is None:
        raise errors.NotFound("user not found")
    if ctx.actor and ctx.actor.user_id == user_id and (is_active is False or (role and role != Role.admin)):
        raise errors.Conflict("admins cannot deactivate or demote themselves")
    before = {"previousRole": user.role, "wasActive": user.is_active}
    revoke = (is_active is False and user.is_active) or (role is not None and role.value != user.role)
    if is_active is not None:
        user.is_active = is_active
    if role is not None:
        user.role = role.value
    if revoke:
        user.token_version += 1
    session.add(user)
    await audit.record(
        session,
        ctx,
        action="update",
        resource_type="user",
        resource_id=user.id,
        detail={"role": user.role, "isActive": user.is_active, **before, "tokensRevoked": revoke},
    )
    await session.refresh(user)
    return user


PASSWORD_TRIES = 5  # wrong current passwords per account ...
PASSWORD_TRIES_WINDOW_SECONDS = 900  # ... per 15 minutes


async def change_password(
    session: AsyncSession, ctx: RequestContext, *, current: str, new: str, settings: Settings
) -> str:
    """The signed-in account's own password change: the current password is required (a stolen
    session alone cannot take the account over, and guesses are limited), every token issued
    before is revoked, and the answer is a fresh token for this session."""
    actor = require_actor(ctx)
    wait = await ratelimit.hit(
        session,
        f"password:{actor.user_id}",
        limit=PASSWORD_TRIES,
        window_seconds=PASSWORD_TRIES_WINDOW_SECONDS,
    )
    user = await session.get(User, actor.user_id)
    if user is None:
        raise errors.Unauthorized("invalid or expired token")
    stored = user.password_hash
    await release_connection(session)  # no pooled connection held while bcrypt runs
    valid = not wait and await security.verify_password_async(current, stored, rounds=settings.bcrypt_rounds)
    audited = {"action": "password_change", "resource_type": "user", "resource_id": user.id}
    if not valid:
        await audit.record(session, ctx, **audited, outcome="failed")
        if wait:
            raise errors.RateLimited("too many wrong passwords; try again later", retry_after_seconds=wait)
        raise errors.Forbidden("the current password is wrong", audited=True)
    new_hash = await security.hash_password_async(new, rounds=settings.bcrypt_rounds)
    user.password_hash = new_hash
    user.token_version += 1
    session.add(user)
    await audit.record(session, ctx, **audited, detail={"tokensRevoked": True})
    return security.issue_token(
        user_id=user.id, role=user.role, settings=settings, token_version=user.token_version
    )
