"""Dependency aliases for routes: settings, DB session, Temporal client, storage clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client as TemporalClient

from healthcare.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def get_temporal(request: Request) -> TemporalClient:
    return request.app.state.temporal  # type: ignore[no-any-return]


def get_s3(request: Request) -> Any:
    return request.app.state.s3


def get_lambda(request: Request) -> Any:
    return request.app.state.lambda_client


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[TemporalClient, Depends(get_temporal)]
S3Dep = Annotated[Any, Depends(get_s3)]
LambdaDep = Annotated[Any, Depends(get_lambda)]
