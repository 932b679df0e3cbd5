"""Serves the built web portal at `/`: hashed assets cached for good, every other non-API path
answered with `index.html` so that a deep link such as `/patients/<id>` survives a reload."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# Paths the app itself answers; under them a miss is an API 404, never the portal.
RESERVED_PREFIXES = ("api/", "healthz", "readyz", "metrics")


def content_security_policy(storage_origin: str) -> str:
    """The portal talks to its own origin, the analytics websocket and (for invoice PDFs, through
    the API's presigned redirect) the object store; Mantine sets inline styles."""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        f"connect-src 'self' ws: wss: {storage_origin}; font-src 'self' data:; object-src 'none'; "
        "base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
    )


def storage_origin(s3_endpoint_url: str | None) -> str:
    if not s3_endpoint_url:
        return "https://*.amazonaws.com"  # Amazon S3's presigned URLs
    parts = urlsplit(s3_endpoint_url)
    return f"{parts.scheme}://{parts.netloc}"


class PortalFiles(StaticFiles):
    """StaticFiles with the single-page-app fallback and the cache and security headers."""

    def __init__(self, *, directory: Path, headers: dict[str, str]) -> None:
        super().__init__(directory=directory)
        self.security_headers = headers

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or not _is_app_route(path):
                raise
            response = await super().get_response("index.html", scope)
        if path.startswith("assets/") and response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"  # content-hashed
        else:
            response.headers["Cache-Control"] = "no-cache"  # index.html names the current assets
        response.headers.update(self.security_headers)
        return response


def _is_app_route(path: str) -> bool:
    """A client-side route: not under the API, not a file (a missing `/assets/x.js` stays a 404)."""
    if path in ("", "."):
        return True  # `/` itself
    if path.startswith(RESERVED_PREFIXES):
        return False
    last = path.rsplit("/", 1)[-1]
    return "." not in last


def mount_portal(app: FastAPI, portal_dir: Path, *, s3_endpoint_url: str | None) -> None:
    """Mount last: every API route is matched first."""
    if (portal_dir / "index.html").is_file():
        headers = {
            "Content-Security-Policy": content_security_policy(storage_origin(s3_endpoint_url)),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        }
        app.mount("/", PortalFiles(directory=portal_dir, headers=headers), name="portal")
        return

    @app.get("/", include_in_schema=False)
    async def portal_missing() -> JSONResponse:
        return JSONResponse(
            {"detail": f"the portal is not built ({portal_dir}); `make setup` builds it"}, status_code=503
        )
