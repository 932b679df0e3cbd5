"""Registration and login."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from api.deps import AnonymousCtx, SessionDep, SettingsDep
from healthcare.schemas import Credentials, RegisterIn, TokenOut, UserPublic
from services import users

router = APIRouter(prefix="/auth", tags=["auth"])


BUSY: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many attempts from this address (or in all); see Retry-After"},
    503: {"description": "Too many password checks at once; see Retry-After"},
}


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserPublic, responses=BUSY)
async def register(
    body: RegisterIn, session: SessionDep, settings: SettingsDep, ctx: AnonymousCtx
) -> UserPublic:
    """Self-registration always gives the `patient` role. An e-mail that already has an account gets
    the same answer as a new one (and nothing changes), so the answer reveals no account."""
    user = await users.register(session, ctx, email=body.email, password=body.password, settings=settings)
    return UserPublic.model_validate(user)


@router.post(
    "/login",
    response_model=TokenOut,
    responses={401: {"description": "Invalid email or password"}, **BUSY},
)
async def login(body: Credentials, session: SessionDep, settings: SettingsDep, ctx: AnonymousCtx) -> TokenOut:
    token, _ = await users.login(session, ctx, email=body.email, password=body.password, settings=settings)
    return TokenOut(access_token=token, expires_in=settings.jwt_ttl_seconds)
