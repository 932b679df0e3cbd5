"""Registration and login."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import AnonymousCtx, SessionDep, SettingsDep
from healthcare.schemas import Credentials, RegisterIn, TokenOut, UserPublic
from services import users

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
async def register(
    body: RegisterIn, session: SessionDep, settings: SettingsDep, ctx: AnonymousCtx
) -> UserPublic:
    """Self-registration always gives the `patient` role."""
    user = await users.register(session, ctx, email=body.email, password=body.password, settings=settings)
    return UserPublic.model_validate(user)


@router.post(
    "/login",
    response_model=TokenOut,
    responses={
        401: {"description": "Invalid email or password"},
        429: {"description": "Too many failed logins"},
    },
)
async def login(body: Credentials, session: SessionDep, settings: SettingsDep, ctx: AnonymousCtx) -> TokenOut:
    token, _ = await users.login(session, ctx, email=body.email, password=body.password, settings=settings)
    return TokenOut(access_token=token, expires_in=settings.jwt_ttl_seconds)
