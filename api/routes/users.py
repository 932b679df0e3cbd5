"""User administration (admin only) and the caller's own account."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from api.deps import AdminActor, Ctx, CurrentActor, PageDep, SessionDep, SettingsDep
from healthcare import errors
from healthcare.models import Role
from healthcare.schemas import Page, PasswordChange, TokenOut, UserCreate, UserPublic, UserUpdate
from services import users

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserPublic)
async def me(actor: CurrentActor, session: SessionDep) -> UserPublic:
    user = await users.get_user(session, actor.user_id)
    if user is None:
        raise errors.NotFound("user not found")
    return UserPublic.model_validate(user)


@router.post(
    "/me/password",
    response_model=TokenOut,
    responses={
        403: {"description": "The current password is wrong"},
        429: {"description": "Too many wrong passwords"},
    },
)
async def change_password(
    body: PasswordChange, session: SessionDep, settings: SettingsDep, ctx: Ctx
) -> TokenOut:
    """Change your own password (the current one is required). Every token issued before, on any
    device, stops working; the answer is a new token for this session."""
    token = await users.change_password(
        session, ctx, current=body.current_password, new=body.new_password, settings=settings
    )
    return TokenOut(access_token=token, expires_in=settings.jwt_ttl_seconds)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
async def create_user(
    body: UserCreate, _: AdminActor, session: SessionDep, settings: SettingsDep, ctx: Ctx
) -> UserPublic:
    user = await users.add_user(
        session, ctx, email=body.email, password=body.password, role=body.role, settings=settings
    )
    return UserPublic.model_validate(user)


@router.get("", response_model=Page[UserPublic])
async def list_users(
    _: AdminActor, session: SessionDep, page: PageDep, role: Role | None = None
) -> Page[UserPublic]:
    items, total = await users.list_users(session, limit=page.limit, offset=page.offset, role=role)
    return Page[UserPublic](
        items=[UserPublic.model_validate(u) for u in items], total=total, limit=page.limit, offset=page.offset
    )


@router.patch("/{user_id}", response_model=UserPublic)
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, _: AdminActor, session: SessionDep, ctx: Ctx
) -> UserPublic:
    """Deactivate (`{"isActive": false}`) or change the role of a user."""
    user = await users.update_user(session, ctx, user_id, is_active=body.is_active, role=body.role)
    return UserPublic.model_validate(user)
