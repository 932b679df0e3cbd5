"""Request bodies on the real API (both patient stores): oversized ones refused early, values the
stores cannot hold refused as bad input, merged attributes bounded, and no patient field in any
role's log, whatever is sent."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devstack.paths import Paths
from healthcare.schemas import MAX_ATTRIBUTES_BYTES
from healthcare.settings import Settings
from tests.integration.factories import Account, create_doctor, create_patient
from tests.waiting import eventually

pytestmark = pytest.mark.integration

V1 = "/api/v1"
JSON = {"content-type": "application/json"}


async def test_an_oversized_body_is_refused_with_413(
    api: httpx.AsyncClient, staff: Account, settings: Settings
) -> None:
    big = json.dumps({"name": "Big", "attributes": {"x": "y" * settings.max_body_bytes}}).encode()
    resp = await api.post(f"{V1}/patients", content=big, headers={**staff.headers, **JSON})
    assert resp.status_code == 413 and resp.json()["detail"]
    # Anonymous routes too, before anything else looks at the request.
    resp = await api.post(f"{V1}/auth/register", content=big, headers=JSON)
    assert resp.status_code == 413


async def test_a_chunked_body_is_cut_off_once_it_grows_past_the_limit(
    api: httpx.AsyncClient, staff: Account, settings: Settings
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"name": "Big", "attributes": {"x": "'
        for _ in range(settings.max_body_bytes // 8192 + 2):
            yield b"y" * 8192
        yield b'"}}'

    resp = await api.post(f"{V1}/patients", content=chunks(), headers={**staff.headers, **JSON})
    assert resp.status_code == 413


async def test_merged_attributes_stay_within_the_limit(
    patient_api: httpx.AsyncClient, staff: Account
) -> None:
    """Each PATCH is small; together they would pass any single-request check."""
    patient = await create_patient(patient_api, staff)
    chunk = "x" * (MAX_ATTRIBUTES_BYTES // 3)
    url = f"{V1}/patients/{patient['id']}"
    answers = [
        await patient_api.patch(url, json={"attributes": {f"k{i}": chunk}}, headers=staff.headers)
        for i in range(4)
    ]
    assert [r.status_code for r in answers[:2]] == [200, 200]
    assert answers[2].status_code == 422 and "exceed" in answers[2].json()["detail"]
    stored = (await patient_api.get(url, headers=staff.headers)).json()["attributes"]
    assert set(stored) == {"k0", "k1"} and len(json.dumps(stored)) <= MAX_ATTRIBUTES_BYTES
    # Removing makes room again.
    resp = await patient_api.patch(url, json={"attributes": {"k0": None, "k3": chunk}}, headers=staff.headers)
    assert resp.status_code == 200 and set(resp.json()["attributes"]) == {"k1", "k3"}


UNSTORABLE = ["NaN", "Infinity", "-Infinity", '"\\ud800"', '{"\\udfff": 1}', '["ok", "\\udc00x"]']


@pytest.mark.parametrize("value", UNSTORABLE)
async def test_values_the_stores_cannot_hold_are_422(
    patient_api: httpx.AsyncClient, staff: Account, value: str
) -> None:
    created = await patient_api.post(
        f"{V1}/patients",
        content=f'{{"name": "Bad Input", "attributes": {{"v": {value}}}}}'.encode(),
        headers={**staff.headers, **JSON},
    )
    assert created.status_code == 422, created.text
    patient = await create_patient(patient_api, staff)
    patched = await patient_api.patch(
        f"{V1}/patients/{patient['id']}",
        content=f'{{"attributes": {{"v": {value}}}}}'.encode(),
        headers={**staff.headers, **JSON},
    )
    assert patched.status_code == 422, patched.text
    assert isinstance(patched.json()["detail"], list)


def _log_offsets(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in folder.rglob("*.log")}


def _logged_since(offsets: dict[Path, int], folder: Path) -> dict[str, str]:
    written = {}
    for path in folder.rglob("*.log"):
        with path.open("rb") as log:
            log.seek(offsets.get(path, 0))
            written[str(path.relative_to(folder))] = log.read().decode("utf-8", "replace")
    return written


async def test_no_role_logs_a_patients_fields(
    api: httpx.AsyncClient, patient_api: httpx.AsyncClient, staff: Account, admin: Account, paths: Paths
) -> None:
    """Bad input of every kind carrying a patient's name and condition, and a booking billed end to
    end; then no log line of any role (API, worker, consumer, relay, Lambda, the stores) has either."""
    offsets = _log_offsets(paths.logs)
    marker = uuid.uuid4().hex[:10]
    name, condition = f"Zelda Marker{marker}", f"Condition{marker} syndrome"
    patient = await create_patient(patient_api, staff, condition=condition, name=name)
    url = f"{V1}/patients/{patient['id']}"
    headers = {**staff.headers, **JSON}
    bad_bodies = [
        f'{{"name": "{name}", "condition": "{condition}", "attributes": {{"score": NaN}}}}',
        f'{{"name": "{name}", "condition": "{condition}", "attributes": {{"n": "\\ud800{condition}"}}}}',
        f'{{"name": "{name}", "condition": "{condition}", "attributes": {{"score": Infinity}}}}',
        f'{{"name": "{name}", "condition": "{condition}\\u0000"}}',
        f'{{"name": "{name}", "condition": "{condition}", "unknown": "{name}"}}',
        f'{{"name": "{name}", "condition": "{condition}", "attributes": ["{name}"]}}',
        f'{{"name": "{name}" "condition": "{condition}"',  # not JSON at all
    ]
    answers = [
        (method, body, await patient_api.request(method, target, content=body.encode(), headers=headers))
        for body in bad_bodies
        for method, target in (("POST", f"{V1}/patients"), ("PATCH", url))
    ]
    q = await patient_api.get(f"{V1}/patients", params={"q": name}, headers=staff.headers)
    assert q.status_code == 200
    # A booking for the patient, billed end to end: every role touches it.
    doctor = await create_doctor(api, admin)
    slot = (datetime.now(UTC) + timedelta(days=60, minutes=7 * (uuid.uuid4().int % 4000))).replace(
        second=0, microsecond=0
    )
    booked = await api.post(
        f"{V1}/appointments",
        json={
            "patientId": patient["id"],
            "doctorId": doctor["id"],
            "time": slot.isoformat(),
            "reason": condition,
        },
        headers=staff.headers,
    )
    if patient_api is api:  # the booking workflow checks the patient in PostgreSQL
        assert booked.status_code == 201, booked.text

        async def issued() -> bool:
            invoices = await api.get(
                f"{V1}/invoices", params={"patientId": patient["id"]}, headers=staff.headers
            )
            items = invoices.json()["items"]
            assert items and items[0]["status"] == "ISSUED", items
            return True

        await eventually(issued, timeout=90, interval=0.5, what="the visit's ISSUED invoice")
    for log, text in _logged_since(offsets, paths.logs).items():
        assert name not in text and f"Marker{marker}" not in text, f"{log} names the patient"
        assert condition not in text and f"Condition{marker}" not in text, f"{log} has the condition"
    for method, body, resp in answers:  # bad input, answered as such, without echoing it
        assert 400 <= resp.status_code < 500, (method, body, resp.status_code, resp.text)
        assert name not in resp.text and condition not in resp.text
