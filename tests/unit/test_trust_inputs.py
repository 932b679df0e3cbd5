"""Input the stores cannot hold is bad input (422), found before any database sees it, and errors
that do reach the database or the catch-all leave no data in the logs."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from api.errors import install_error_handlers
from healthcare import errors
from healthcare.db import create_engine
from healthcare.logging import configure_logging
from healthcare.schemas import MAX_ATTRIBUTES_BYTES, AppointmentCreate, PatientCreate, PatientUpdate
from healthcare.settings import Settings
from healthcare.stores.patients import merge_attributes

# Python's json module (FastAPI's parser) reads these, and PostgreSQL refuses them.
UNSTORABLE = [
    '{"name": "Ann", "attributes": {"score": NaN}}',
    '{"name": "Ann", "attributes": {"score": Infinity}}',
    '{"name": "Ann", "attributes": {"deep": [1, {"x": -Infinity}]}}',
    '{"name": "Ann", "attributes": {"note": "\\ud800"}}',
    '{"name": "Ann", "attributes": {"\\udfff": 1}}',
    '{"name": "Ann\\ud83d", "condition": "flu"}',
]


@pytest.mark.parametrize("raw", UNSTORABLE)
def test_unstorable_values_are_refused_anywhere_in_a_body(raw: str) -> None:
    data = json.loads(raw)
    with pytest.raises(ValidationError):
        PatientCreate.model_validate(data)
    with pytest.raises(ValidationError):
        PatientUpdate.model_validate(data)


def test_lone_surrogates_are_refused_in_other_bodies_too() -> None:
    body = {
        "patientId": str(uuid.uuid4()),
        "doctorId": str(uuid.uuid4()),
        "time": "2031-01-01T09:00:00+00:00",
    }
    raw = json.dumps(body)[:-1] + ', "reason": "\\udc00"}'
    with pytest.raises(ValidationError):
        AppointmentCreate.model_validate(json.loads(raw))


def test_a_pair_of_surrogates_is_an_ordinary_character() -> None:
    assert PatientCreate.model_validate(json.loads('{"name": "Ann \\ud83d\\ude00"}')).name == "Ann \U0001f600"


def test_merged_attributes_cannot_outgrow_the_limit() -> None:
    chunk = "x" * (MAX_ATTRIBUTES_BYTES // 3)
    current: dict[str, Any] = {"a": chunk, "b": chunk}
    with pytest.raises(errors.Unprocessable):
        merge_attributes(current, {"c": chunk})
    # Shrinking, or changing within the limit, still works; so does shrinking a record stored too big.
    assert merge_attributes(current, {"a": None, "c": chunk}) == {"b": chunk, "c": chunk}
    too_big = {"a": chunk, "b": chunk, "c": chunk, "d": chunk}
    assert merge_attributes(too_big, {"d": None}) == {"a": chunk, "b": chunk, "c": chunk}


def test_engines_keep_statement_parameters_out_of_errors() -> None:
    assert create_engine(Settings()).sync_engine.hide_parameters is True


def _app(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    return app


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("could not store 'Ann Secretname' with 'Rare Condition'"),
        DBAPIError(
            "INSERT INTO patients ...",
            {"name": "Ann Secretname"},
            ValueError("invalid input for query argument $3: {'x': 'Rare Condition'}"),
        ),
    ],
    ids=["unexpected", "database"],
)
async def test_an_unexpected_error_logs_where_not_what(
    exc: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True)
    try:
        # raise_app_exceptions: an error that escaped the handlers would fail the request here (and
        # uvicorn would log it, message and all).
        transport = httpx.ASGITransport(app=_app(exc), raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            resp = await client.get("/boom")
    finally:
        logging.getLogger().handlers.clear()
    assert resp.status_code == 500 and resp.json()["detail"] == "internal error"
    logged = capsys.readouterr().err
    assert "unhandled error" in logged and "test_trust_inputs.py" in logged  # where
    assert "Secretname" not in logged and "Rare Condition" not in logged  # never what
