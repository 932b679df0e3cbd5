"""Accounts: registration, login with throttling, admin management of users."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors, ratelimit, security
from healthcare.db import add_unique, page, release_connection
from healthcare.models import Role, User, utcnow
from healthcare.settings import Settings
from services import audit, throttle
from services.context import Actor, RequestContext, require_actor

LOGIN_FAILED = "invalid email or password"


async def create_user(
    session: AsyncSession, *, email: str, password: str, role: Role, settings: Settings
) -> User:
    """Insert an account (flushed, not committed); the audited use cases below build on it. The
    password is hashed before the first statement, so no pooled connection waits on bcrypt."""
    user = User(
        email=email,
        password_hash=await security.hash_password_async(
            password, rounds=settings.bcrypt_rounds, queue_limit=settings.hash_queue_limit
        ),
        role=role.value,
    )
    await add_unique(session, user, conflict="a user with this email already exists")
    return user


async def register(
    session: AsyncSession, ctx: RequestContext, *, email: str, password: str, settings: Settings
) -> User:
    """Self-registration: always the `patient` role; the new account is the actor of its record.

    Throttled per client address and in all (services/throttle.py) before anything is hashed. A
    taken address answers exactly like a new one (same status, same fields, one bcrypt hash
    either way), so registration tells nobody which e-mails have accounts: nothing is created or
    changed, and the attempt is audited against the existing account (outcome `duplicate`). The
    id in that answer belongs to no account."""
    await throttle.check_registration(session, client_ip=ctx.client_ip, settings=settings, now=utcnow())
    await release_connection(session)
    try:
        user = await create_user(
            session, email=email, password=password, role=Role.patient, settings=settings
        )
    except errors.Conflict:
        existing = await session.scalar(select(User.id).where(func.lower(User.email) == email))
        await audit.record(
            session, ctx, action="register", resource_type="user", resource_id=existing, outcome="duplicate"
        )
        return User(
            id=uuid.uuid4(), email=email, password_hash="", role=Role.patient.value, created_at=utcnow()
        )
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


async def token_actor(session: AsyncSession, claims: security.TokenClaims) -> tuple[Actor | None, str | None]:
    """Who a valid token speaks for, if that account may still act: it exists, is active, and the
    token carries its current token version (a password change, deactivation or role change since
    the token was issued revokes it). The one rule for the API (every request) and the websocket
    relay (on connect and periodically). Returns the actor, or None and why (`inactive`: deleted or
    deactivated; `revoked`: an older token version). A Core select of a few columns: the ORM's
    identity map and object loading cost more than the query."""
    row = (
        await session.execute(
            select(User.id, User.role, User.email, User.token_version).where(
                col(User.id) == claims.user_id, col(User.is_active)
            )
        )
    ).first()
    if row is None:
        return None, "inactive"
    if row.token_version != claims.token_version:
        return None, "revoked"
    return Actor(user_id=row.id, role=Role(row.role), email=row.email), None


async def active_actor(session: AsyncSession, claims: security.TokenClaims) -> Actor | None:
    """`token_actor` without the reason: the actor, or None if the token may no longer act."""
    actor, _ = await token_actor(session, claims)
    return actor


async def login(
    session: AsyncSession, ctx: RequestContext, *, email: str, password: str, settings: Settings
) -> tuple[str, User]:
    """Returns an access token. Unknown email and wrong password answer alike, in the same time.

    The attempt is counted (services/throttle.py) and the account read in one short transaction,
    committed before the password is checked: no pooled connection waits for bcrypt or a turn."""
    attempt = await throttle.begin_login(
        session, email=email, client_ip=ctx.client_ip, settings=settings, now=utcnow()
    )
    user = await session.scalar(select(User).where(func.lower(User.email) == email))
    await release_connection(session)
    if attempt.wait_seconds > 0:
        await asyncio.sleep(attempt.wait_seconds)  # this account's next turn (progressive delay)
    stored = user.password_hash if user else security.dummy_hash(settings.bcrypt_rounds)
    try:
        valid = await security.verify_password_async(
            password, stored, rounds=settings.bcrypt_rounds, queue_limit=settings.hash_queue_limit
        )
    except errors.DependencyUnavailable:
        await throttle.undo_attempt(session, attempt, settings=settings)
        await session.commit()
        raise
    if not (user and valid and user.is_active):
        await throttle.login_failed(session, attempt, settings=settings, now=utcnow())
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
    await throttle.login_succeeded(session, attempt, settings=settings)
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
    valid = not wait and await security.verify_password_async(
        current, stored, rounds=settings.bcrypt_rounds, queue_limit=settings.hash_queue_limit
    )
    audited = {"action": "password_change", "resource_type": "user", "resource_id": user.id}
    if not valid:
        await audit.record(session, ctx, **audited, outcome="failed")
        if wait:
            raise errors.RateLimited("too many wrong passwords; try again later", retry_after_seconds=wait)
        raise errors.Forbidden("the current password is wrong", audited=True)
    new_hash = await security.hash_password_async(
        new, rounds=settings.bcrypt_rounds, queue_limit=settings.hash_queue_limit
    )
    user.password_hash = new_hash
    user.token_version += 1
    session.add(user)
    await audit.record(session, ctx, **audited, detail={"tokensRevoked": True})
    return security.issue_token(
        user_id=user.id, role=user.role, settings=settings, token_version=user.token_version
    )
