"""The one place that turns errors into HTTP answers: {"detail": ...}, never a stack trace."""

from __future__ import annotations

import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


# SQLSTATEs of a server that cannot take the request now: connection exceptions (class 08), a
# shutdown or a start-up in progress (57P01-57P03: a restart), too many connections (53300).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return chain


def _stack(exc: BaseException) -> list[str]:
    """Each exception of the chain as its type and frames (file:line function), without messages."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines.append(type(current).__qualname__)
        lines += [f"  {f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(current.__traceback__)]
        current = current.__cause__ or current.__context__
    return lines


def _database_unavailable(exc: SQLAlchemyError) -> bool:
    """The pool timed out, or the connection failed: not a bug in the request or in our code."""
    if isinstance(exc, (PoolTimeoutError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError) and isinstance(exc.orig, OSError | ConnectionError):
        return True
    # asyncpg's own errors reach us as a plain DBAPIError: "the database system is starting up"
    # (a restart of PostgreSQL) is one, found by its SQLSTATE.
    for cause in _causes(exc):
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_SQLSTATES):
            return True
    return False


def install_error_handlers(app: FastAPI) -> None:
    """Call before adding other middleware: the catch-all must be the innermost of them."""
    app.add_middleware(UnhandledErrorMiddleware)

    @app.exception_handler(errors.DomainError)
    async def _domain(request: Request, exc: errors.DomainError) -> JSONResponse:
        if isinstance(exc, errors.Forbidden) and not exc.audited:
            actor = getattr(request.state, "actor", None)
            ctx = request_context(request, actor, request.app.state.settings)
            await record_refusal(request, ctx, action="forbidden")
        headers = None
        body: dict[str, Any] = {"detail": exc.message}
        if isinstance(exc, errors.RateLimited | errors.DependencyUnavailable):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        if isinstance(exc, errors.DependencyUnavailable):
            body |= exc.details
        if isinstance(exc, errors.Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(body, status_code=_status_for(exc), headers=headers)

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

    @app.exception_handler(ConnectionError)
    async def _connection(request: Request, exc: ConnectionError) -> JSONResponse:
        # A new connection refused or reset (SQLAlchemy lets asyncpg's OSError through when the
        # database is restarting): a dependency is away for now, and the request can be retried.
        log.warning("dependency unreachable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"detail": "a service this request needs is unavailable; try again"},
            status_code=503,
            headers={"Retry-After": "1"},
        )


def _unexpected_body(scope: Scope) -> dict[str, Any]:
    return {"detail": "internal error", "requestId": scope.get("state", {}).get("request_id")}


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Where it failed, never what with: an exception's message can quote the data it choked on
    # (asyncpg's does: "invalid input for query argument $3: {...}").
    log.error("unhandled error", path=request.url.path, error=type(exc).__name__, frames=_stack(exc))
    return JSONResponse(_unexpected_body(request.scope), status_code=500)


class UnhandledErrorMiddleware:
    """Answers 500 for any exception no handler took, and ends it here.

    Starlette's outermost middleware would answer too, but then re-raise for the server to log, and
    uvicorn logs the whole traceback, messages included. Pure ASGI, inside every other middleware
    of ours, so they still see the 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, logged without data
            log.error("unhandled error", path=scope.get("path"), error=type(exc).__name__, frames=_stack(exc))
            if not started:
                await JSONResponse(_unexpected_body(scope), status_code=500)(scope, receive, send)
