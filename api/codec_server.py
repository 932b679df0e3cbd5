"""The codec server: decrypts (and encrypts) Temporal payloads for the Temporal UI, for operators only.

The Temporal UI posts `{"payloads": [...]}` (protobuf JSON) to `<endpoint>/decode` or `/encode`
with an `X-Namespace` header, and answers with what comes back. Who may call:

- staff and admins, who may read every patient record through the API anyway: decoding shows them
  nothing they could not already see (doctors and patients see only their own records, so a
  workflow of anyone's may not be decoded for them: 403);
- with their platform access token as `Authorization: Bearer` (scripts; a UI set to pass the
  user's access token), or with the session cookie this server sets at `/login`, which the UI
  sends when "Include cross-origin credentials" is on.

Each call leaves an audit record per workflow it touched (the codec writes the workflow id into
each payload's metadata, since the UI's request names only the namespace); CORS admits only the
Temporal UI's origin. Routes match on the last path segment, as the codec protocol asks, so the
server can sit under any prefix.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, cast
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Header, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from temporalio.api.common.v1 import Payloads

from api.deps import SessionDep, SettingsDep, actor_from_token, request_context
from api.errors import install_error_handlers
from api.middleware import RequestContextMiddleware
from healthcare import codec, errors, probes
from healthcare.db import create_engine, session_factory
from healthcare.logging import configure_logging, get_logger
from healthcare.models import Role
from healthcare.settings import Settings, get_settings
from services import payloads as payload_service
from services import users
from services.context import Actor

log = get_logger(__name__)

COOKIE = "hc_codec_session"
MAX_BODY_BYTES = 8 * 1024 * 1024  # a page of history; Temporal's own payload limit is 2 MiB each
Kind = payload_service.Kind
CORS_HEADERS = ["Content-Type", "X-Namespace", "Authorization", "Authorization-Extras"]


async def caller(request: Request, session: SessionDep, settings: SettingsDep) -> Actor:
    """The caller, from a bearer token or else the sign-in cookie."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = request.cookies.get(COOKIE, "")
    if not token:
        raise errors.Unauthorized("sign in at this codec server's /login, or send a bearer token")
    return await actor_from_token(session, settings, token)


def conversion(path: str) -> Kind:
    """`decode` or `encode`: the last path segment, wherever the server is mounted."""
    kind = path.rstrip("/").rsplit("/", 1)[-1]
    if kind not in ("decode", "encode"):
        raise errors.NotFound("not found")
    return cast(Kind, kind)


async def _read_payloads(request: Request) -> Payloads:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        # JSON only: a cross-site form post cannot reach here without a CORS preflight.
        raise errors.Invalid("send the payloads as application/json")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise errors.Invalid(f"at most {MAX_BODY_BYTES} bytes of payloads per call")
    try:
        return ParseDict(json.loads(body), Payloads(), ignore_unknown_fields=True)
    except (ValueError, ParseError) as exc:
        raise errors.Invalid('expected {"payloads": [...]} in protobuf JSON') from exc


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
label{{display:block;margin-top:1rem}}input{{width:100%;padding:.4rem;font-size:1rem}}
button{{margin-top:1rem;padding:.5rem 1rem;font-size:1rem}}.error{{color:#a00}}</style></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""

_FORM = """<p>Staff and admins sign in here with their platform account to see decoded workflow data
in the Temporal UI.</p>{error}
<form method="post" action="login">
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def create_codec_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = create_engine(settings)
        app.state.sessions = session_factory(app.state.engine)
        app.state.codec = codec.EncryptionCodec(codec.keyring(settings))
        try:
            yield
        finally:
            await app.state.engine.dispose()

    app = FastAPI(
        title="Healthcare codec server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.codec_origins,
        allow_credentials=True,
        allow_methods=["POST"],
        allow_headers=CORS_HEADERS,
        max_age=600,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        (result,) = await probes.run_probes(
            {"postgres": lambda: probes.probe_postgres(request.app.state.engine)},
            timeout=settings.ready_timeout_seconds,
        )
        return JSONResponse(
            {"status": "ready" if result.ok else "not ready", "checks": {result.name: result.detail}},
            status_code=200 if result.ok else 503,
        )

    @app.get("/login")
    async def login_page() -> HTMLResponse:
        return _page("Codec server sign-in", _FORM.format(error=""))

    @app.post("/login")
    async def login(request: Request, session: SessionDep) -> Response:
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise errors.Forbidden("sign in from this server's own page")
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        email = (form.get("email") or [""])[0].strip().lower()
        password = (form.get("password") or [""])[0]
        ctx = request_context(request, None, settings)
        try:
            token, user = await users.login(session, ctx, email=email, password=password, settings=settings)
        except errors.Unauthorized:
            error = '<p class="error" role="alert">Invalid email or password.</p>'
            return _page("Codec server sign-in", _FORM.format(error=error), status=401)
        if not payload_service.may_decode(Role(user.role)):
            return _page(
                "Not allowed",
                "<p>Only staff and admins may see decoded workflow data.</p>",
                status=403,
            )
        response = RedirectResponse("./", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=settings.jwt_ttl_seconds,
            httponly=True,
            secure=settings.codec_cookie_is_secure,
            samesite=settings.codec_cookie_samesite,
        )
        return response

    @app.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("login", status_code=303)
        response.delete_cookie(COOKIE, httponly=True, secure=settings.codec_cookie_is_secure)
        return response

    @app.get("/")
    async def home(request: Request, session: SessionDep) -> Response:
        token = request.cookies.get(COOKIE)
        if not token:
            return RedirectResponse("login", status_code=303)
        try:
            actor = await actor_from_token(session, settings, token)
        except errors.Unauthorized:
            return RedirectResponse("login", status_code=303)
        ui = html.escape(settings.temporal_ui_url)
        endpoint = html.escape(str(request.base_url).rstrip("/"))
        body = (
            f"<p>Signed in as {html.escape(actor.email)} ({actor.role.value}).</p>"
            f'<p>Open the <a href="{ui}">Temporal UI</a>. Its codec server setting must be '
            f"<code>{endpoint}</code> with <em>Include cross-origin credentials</em> on.</p>"
            '<form method="post" action="logout"><button type="submit">Sign out</button></form>'
        )
        return _page("Codec server", body)

    # Last: every other POST is a conversion, matched on its final path segment.
    @app.post("/{path:path}")
    async def codec_call(
        request: Request,
        session: SessionDep,
        kind: Annotated[Kind, Depends(conversion)],
        actor: Annotated[Actor, Depends(caller)],
        x_namespace: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        out = await payload_service.convert(
            session,
            request_context(request, actor, settings),
            keys=request.app.state.codec,
            kind=kind,
            payloads=(await _read_payloads(request)).payloads,
            namespace=x_namespace,
        )
        return JSONResponse(MessageToDict(Payloads(payloads=out)))

    return app


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory api.codec_server:app_factory`."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_codec_app(settings)
