"""Dependency aliases for routes: settings, DB session, current user, request context, stores, clients.

Every dependency is `async def`: FastAPI runs a plain `def` one in a thread pool, a hand-off that
cost more than the work it does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client as TemporalClient

from api.refusals import record_refusal
from healthcare import errors, security
from healthcare.models import Role
from healthcare.payments import PaymentProvider
from healthcare.settings import Settings
from healthcare.stores.patients import PatientStore
from healthcare.stores.patients_pg import PostgresPatientStore
from services import users
from services.context import Actor, RequestContext


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def get_temporal(request: Request) -> TemporalClient:
    return request.app.state.temporal  # type: ignore[no-any-return]


async def get_s3(request: Request) -> Any:
    return request.app.state.s3


async def get_lambda(request: Request) -> Any:
    return request.app.state.lambda_client


async def get_payment_provider(request: Request) -> PaymentProvider | None:
    return request.app.state.payment_provider  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[TemporalClient, Depends(get_temporal)]
S3Dep = Annotated[Any, Depends(get_s3)]
LambdaDep = Annotated[Any, Depends(get_lambda)]
PaymentProviderDep = Annotated[PaymentProvider | None, Depends(get_payment_provider)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/login")


async def get_actor(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise errors.Unauthorized("missing bearer token")
    return await actor_from_token(session, settings, credentials.credentials, request=request)


async def actor_from_token(
    session: AsyncSession, settings: Settings, token: str, *, request: Request | None = None
) -> Actor:
    """The active account a token names; Unauthorized for a bad, expired, revoked or orphaned token.

    With the `request`, a refusal is audited (sampled) and the actor kept for later refusals."""
    try:
        claims = security.decode_token(token, settings=settings)
    except security.InvalidToken as exc:
        if request is not None:
            subject = security.token_subject(token, settings=settings)
            await _refused_token(request, settings, reason=str(exc), subject=subject)
        raise errors.Unauthorized("invalid or expired token") from exc
    # The token alone is not enough: a deactivated or deleted account, or a token issued before the
    # account's last password change, deactivation or role change, loses access at once
    # (services.users.token_actor, the rule the websocket relay applies too).
    actor, reason = await users.token_actor(session, claims)
    if actor is None:
        if request is not None:
            await _refused_token(request, settings, reason=reason or "inactive", subject=claims.user_id)
        raise errors.Unauthorized("invalid or expired token")
    if request is not None:
        request.state.actor = actor  # for the audit record of a refusal later in the request
    return actor


async def _refused_token(
    request: Request, settings: Settings, *, reason: str, subject: uuid.UUID | None
) -> None:
    ctx = request_context(request, None, settings)
    if request.app.state.refusals.admit(ctx.client_ip, str(subject), reason):
        await record_refusal(request, ctx, action="bad_token", actor_id=subject, detail={"reason": reason})


CurrentActor = Annotated[Actor, Depends(get_actor)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def request_context(request: Request, actor: Actor | None, settings: Settings) -> RequestContext:
    return RequestContext(
        actor=actor,
        client_ip=client_ip(request),
        request_id=request.scope.get("state", {}).get("request_id"),
        audit_key=settings.audit_hmac_key.get_secret_value().encode(),
    )


async def get_context(request: Request, actor: CurrentActor, settings: SettingsDep) -> RequestContext:
    return request_context(request, actor, settings)


async def get_anonymous_context(request: Request, settings: SettingsDep) -> RequestContext:
    return request_context(request, None, settings)


Ctx = Annotated[RequestContext, Depends(get_context)]
AnonymousCtx = Annotated[RequestContext, Depends(get_anonymous_context)]


def require_roles(*roles: Role) -> Callable[[CurrentActor], Coroutine[Any, Any, Actor]]:
    async def check(actor: CurrentActor) -> Actor:
        if actor.role not in roles:
            raise errors.Forbidden("your role does not allow this action")
        return actor

    return check


AdminActor = Annotated[Actor, Depends(require_roles(Role.admin))]


async def get_patient_store(request: Request, session: SessionDep) -> PatientStore:
    factory = getattr(request.app.state, "patient_store_factory", None)
    if factory is not None:
        return factory(session)  # type: ignore[no-any-return]
    return PostgresPatientStore(session)


PatientStoreDep = Annotated[PatientStore, Depends(get_patient_store)]


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int


async def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip")] = 0,
) -> Pagination:
    return Pagination(limit=limit, offset=offset)


PageDep = Annotated[Pagination, Depends(get_page)]
