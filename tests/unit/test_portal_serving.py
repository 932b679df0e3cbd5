"""The API serves the built portal: deep links fall back to index.html, API paths never do."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from api.schema import render
from healthcare.settings import REPO_ROOT, Settings

INDEX = "<!doctype html><title>portal</title>"


@pytest.fixture
def portal_dir(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    return tmp_path


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000")


@pytest.mark.parametrize(
    "path", ["/", "/patients", "/patients/4b1e6a0c-1f7e-4d0e-9c51-0d1f1b2a3c4d", "/admin/audit"]
)
async def test_app_routes_answer_index_html(portal_dir: Path, path: str) -> None:
    settings = Settings(portal_dir=portal_dir, s3_endpoint_url="http://127.0.0.1:18333/")
    async with _client(create_app(settings)) as client:
        resp = await client.get(path)
    assert resp.status_code == 200
    assert resp.text == INDEX
    assert resp.headers["cache-control"] == "no-cache"
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "connect-src 'self'" in csp and " http://127.0.0.1:18333" in csp  # the PDF redirect target
    assert resp.headers["x-content-type-options"] == "nosniff"


async def test_hashed_assets_are_cached_and_missing_files_stay_404(portal_dir: Path) -> None:
    async with _client(create_app(Settings(portal_dir=portal_dir))) as client:
        asset = await client.get("/assets/index-abc123.js")
        missing = await client.get("/assets/index-gone.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert missing.status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v2/patients", "/metricsx"])
async def test_api_paths_never_fall_back_to_the_portal(portal_dir: Path, path: str) -> None:
    async with _client(create_app(Settings(portal_dir=portal_dir))) as client:
        resp = await client.get(path)
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/json")


async def test_an_unbuilt_portal_says_how_to_build_it(tmp_path: Path) -> None:
    async with _client(create_app(Settings(portal_dir=tmp_path / "none"))) as client:
        resp = await client.get("/")
    assert resp.status_code == 503
    assert "make setup" in resp.json()["detail"]


def test_the_committed_openapi_document_matches_the_app() -> None:
    """The portal's client is generated from portal/openapi.json: it must be the app's schema
    (regenerate with `make portal-client` after changing the API)."""
    committed = (REPO_ROOT / "portal" / "openapi.json").read_text()
    assert json.loads(committed) == json.loads(render()), "run `make portal-client`"


async def test_clinic_facts_are_public_and_name_the_websocket(tmp_path: Path) -> None:
    settings = Settings(
        portal_dir=tmp_path, clinic_currency="EUR", clinic_time_zone="Europe/Paris", ws_port=9001
    )
    app = create_app(settings)
    app.state.settings = settings  # what the lifespan sets; this route needs nothing else
    async with _client(app) as client:
        body = (await client.get("/api/v1/clinic")).json()
    assert body == {
        "name": "Clinic",
        "currency": "EUR",
        "timeZone": "Europe/Paris",
        "analyticsWsUrl": "ws://127.0.0.1:9001/ws/analytics",
    }


def test_an_unknown_clinic_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Settings(clinic_time_zone="Mars/Olympus")
