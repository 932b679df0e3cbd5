"""The one place that turns errors into HTTP answers: {"detail": ...}, never a stack trace."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import request_context
from api.refusals import record_refusal
from healthcare import errors
from healthcare.logging import get_logger

log = get_logger(__name__)

_STATUS: dict[type[errors.DomainError], int] = {
    errors.Invalid: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unprocessable: 422,
    errors.RateLimited: 429,
    errors.IntegrityFailure: 502,
    errors.DependencyUnavailable: 503,
}


def _status_for(exc: errors.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def _clean_validation_errors(errs: Any) -> list[dict[str, Any]]:
    # Echoing the rejected input back could copy patient data into logs and proxies: drop it.
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errs]


def _database_unavailable(exc: SQLAlchemyError) -> bool:
    """The pool timed out, or the connection failed: not a bug in the request or in our code."""
    if isinstance(exc, (PoolTimeoutError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError) and isinstance(exc.orig, OSError | ConnectionError)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.DomainError)
    async def _domain(request: Request, exc: errors.DomainError) -> JSONResponse:
        if isinstance(exc, errors.Forbidden) and not exc.audited:
            actor = getattr(request.state, "actor", None)
            ctx = request_context(request, actor, request.app.state.settings)
            await record_refusal(request, ctx, action="forbidden")
        headers = None
        if isinstance(exc, errors.RateLimited):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        if isinstance(exc, errors.Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"detail": exc.message}, status_code=_status_for(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = jsonable_encoder(_clean_validation_errors(exc.errors()))
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if not _database_unavailable(exc):
            return await _unexpected(request, exc)
        # Every pooled connection busy, or the database unreachable: the request can be retried.
        log.warning("database unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"detail": "the database is busy or unavailable; try again"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"detail": "internal error", "requestId": request.scope.get("state", {}).get("request_id")},
            status_code=500,
        )
