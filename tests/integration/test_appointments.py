"""Appointments over HTTP on the real stack: the row, the Kafka event, races, retries and a killed worker."""

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.paths import Paths
from healthcare.settings import Settings
from tests.integration.factories import (
    Account,
    create_doctor,
    create_patient,
    create_user,
    register_patient_user,
)
from tests.integration.kafka_probe import TopicProbe
from tests.waiting import eventually

V1 = "/api/v1"


def _slot(days: float = 3, minute: int | None = None) -> str:
    base = datetime.now(UTC) + timedelta(days=days)
    base = base.replace(second=0, microsecond=0, minute=minute if minute is not None else base.minute)
    return base.isoformat()


async def _book(
    api: httpx.AsyncClient, who: Account, patient: str, doctor: str, **extra: Any
) -> httpx.Response:
    headers = {**who.headers, **extra.pop("headers", {})}
    body = {
        "patientId": patient,
        "doctorId": doctor,
        "time": extra.pop("time", _slot(uuid.uuid4().int % 300 + 1)),
        **extra,
    }
    return await api.post(f"{V1}/appointments", json=body, headers=headers)


def _events_for(values: list[dict[str, Any]], appointment_id: str) -> list[dict[str, Any]]:
    return [v for v in values if v.get("appointmentId") == appointment_id]


async def test_booking_stores_the_row_and_publishes_the_contract_event(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    async with TopicProbe(settings, settings.topic_appointment_events) as probe:
        resp = await _book(api, staff, patient["id"], doctor["id"], durationMinutes=45, reason="check-up")
        assert resp.status_code == 201, resp.text
        appt = resp.json()
        assert appt["status"] == "BOOKED" and appt["durationMinutes"] == 45
        assert appt["workflowId"] == f"appointment-{appt['id']}"
        values = await probe.collect(until=lambda vs: _events_for(vs, appt["id"]))
    events = _events_for(values, appt["id"])
    assert len(events) == 1
    event = events[0]
    assert set(event) == {"event", "eventId", "appointmentId", "patientId", "doctorId", "time", "occurredAt"}
    assert event["event"] == "APPOINTMENT_CREATED"
    assert (event["patientId"], event["doctorId"]) == (patient["id"], doctor["id"])
    assert datetime.fromisoformat(event["time"]) == datetime.fromisoformat(appt["time"])
    got = await api.get(f"{V1}/appointments/{appt['id']}", headers=staff.headers)
    assert got.status_code == 200 and got.json() == appt


async def test_cancel_publishes_the_cancellation_and_is_final(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    appt = (await _book(api, staff, patient["id"], doctor["id"])).json()
    async with TopicProbe(settings, settings.topic_appointment_events) as probe:
        resp = await api.post(f"{V1}/appointments/{appt['id']}/cancel", headers=staff.headers)
        assert resp.status_code == 200 and resp.json()["status"] == "CANCELLED"
        values = await probe.collect(until=lambda vs: _events_for(vs, appt["id"]))
    assert [e["event"] for e in _events_for(values, appt["id"])] == ["APPOINTMENT_CANCELLED"]
    for action in ("cancel", "complete", "no-show"):
        again = await api.post(f"{V1}/appointments/{appt['id']}/{action}", headers=staff.headers)
        assert again.status_code == 409, action
    # The slot is free again.
    rebook = await _book(api, staff, patient["id"], doctor["id"], time=appt["time"])
    assert rebook.status_code == 201


async def test_concurrent_bookings_of_one_slot_one_wins(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doctor = await create_doctor(api, admin)
    p1, p2 = await create_patient(api, staff), await create_patient(api, staff)
    slot = _slot(5, minute=0)
    first, second = await asyncio.gather(
        _book(api, staff, p1["id"], doctor["id"], time=slot),
        _book(api, staff, p2["id"], doctor["id"], time=slot),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    loser = first if first.status_code == 409 else second
    assert "already has an appointment" in loser.json()["detail"]
    # Overlap, not only the same start: 30 minutes from 10:00 blocks 10:15.
    later = (datetime.fromisoformat(slot) + timedelta(minutes=15)).isoformat()
    assert (await _book(api, staff, p2["id"], doctor["id"], time=later)).status_code == 409
    listed = (
        await api.get(f"{V1}/appointments", params={"doctorId": doctor["id"]}, headers=staff.headers)
    ).json()
    assert listed["total"] == 1


async def test_idempotency_key_returns_the_same_appointment(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    slot = _slot(7)
    responses = await asyncio.gather(
        *(_book(api, staff, patient["id"], doctor["id"], time=slot, headers=key) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = (
        await api.get(f"{V1}/appointments", params={"patientId": patient["id"]}, headers=staff.headers)
    ).json()
    assert listed["total"] == 1
    other_body = await _book(api, staff, patient["id"], doctor["id"], time=_slot(8), headers=key)
    assert other_body.status_code == 422


async def test_bad_input_is_refused_before_any_workflow(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    naive = (datetime.now(UTC) + timedelta(days=2)).replace(tzinfo=None).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for extra in (
        {"time": naive},
        {"time": past},
        {"time": "tomorrow"},
        {"durationMinutes": 0},
        {"durationMinutes": 481},
    ):
        resp = await _book(api, staff, patient["id"], doctor["id"], **extra)
        assert resp.status_code == 422, extra
    assert (await _book(api, staff, patient["id"], str(uuid.uuid4()))).status_code == 404
    assert (await _book(api, staff, str(uuid.uuid4()), doctor["id"])).status_code == 404
    listed = (
        await api.get(f"{V1}/appointments", params={"patientId": patient["id"]}, headers=staff.headers)
    ).json()
    assert listed["total"] == 0


async def test_role_rules(api: httpx.AsyncClient, admin: Account, staff: Account) -> None:
    doctor_user = await create_user(api, admin, "doctor")
    doctor = await create_doctor(api, admin, user=doctor_user)
    other_doctor = await create_doctor(api, admin)
    alice, bob = await register_patient_user(api), await register_patient_user(api)
    alice_rec = await create_patient(api, alice)
    bob_rec = await create_patient(api, bob)

    mine = await _book(api, alice, alice_rec["id"], doctor["id"])
    assert mine.status_code == 201
    assert (await _book(api, alice, bob_rec["id"], doctor["id"])).status_code == 404
    bobs = (await _book(api, bob, bob_rec["id"], other_doctor["id"])).json()

    assert (await api.get(f"{V1}/appointments/{bobs['id']}", headers=alice.headers)).status_code == 404
    assert (
        await api.post(f"{V1}/appointments/{bobs['id']}/cancel", headers=alice.headers)
    ).status_code == 404
    alice_list = (await api.get(f"{V1}/appointments", params={"limit": 100}, headers=alice.headers)).json()
    assert [a["id"] for a in alice_list["items"]] == [mine.json()["id"]]
    assert (
        await api.post(f"{V1}/appointments/{mine.json()['id']}/complete", headers=alice.headers)
    ).status_code == 403

    # The doctor now sees Alice (an appointment with them) but not Bob.
    assert (await api.get(f"{V1}/patients/{alice_rec['id']}", headers=doctor_user.headers)).status_code == 200
    assert (await api.get(f"{V1}/patients/{bob_rec['id']}", headers=doctor_user.headers)).status_code == 404
    doc_list = (await api.get(f"{V1}/appointments", headers=doctor_user.headers)).json()
    assert [a["id"] for a in doc_list["items"]] == [mine.json()["id"]]
    assert (await _book(api, doctor_user, alice_rec["id"], other_doctor["id"])).status_code == 403

    done = await api.post(f"{V1}/appointments/{mine.json()['id']}/complete", headers=staff.headers)
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
    assert (
        await api.post(f"{V1}/appointments/{mine.json()['id']}/cancel", headers=alice.headers)
    ).status_code == 409


async def test_killed_worker_between_store_and_publish_still_publishes(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    settings: Settings,
    paths: Paths,
    engine: AsyncEngine,
) -> None:
    """Freeze the broker so publishing hangs after the row is stored, kill the worker, then let
    both come back: the event, queued in the outbox with the row, is published by the restarted
    worker's relay, under one event id however often it went out."""
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    kafka_pid = int((paths.run / "kafka.pid").read_text())
    async with TopicProbe(settings, settings.topic_appointment_events) as probe:
        os.kill(kafka_pid, signal.SIGSTOP)
        try:
            resp = await _book(api, staff, patient["id"], doctor["id"])
            assert resp.status_code == 201  # stored; the publish is now stuck on the frozen broker
            worker_pid = int((paths.run / "worker.pid").read_text())
            os.kill(worker_pid, signal.SIGKILL)
        finally:
            os.kill(kafka_pid, signal.SIGCONT)
        appt = resp.json()
        values = await probe.collect(until=lambda vs: _events_for(vs, appt["id"]), timeout=120, settle=3)
    events = _events_for(values, appt["id"])
    assert events, "the event never reached Kafka"
    # Delivery is at-least-once; the event id is stable, so consumers see one distinct event.
    assert {e["eventId"] for e in events} == {events[0]["eventId"]}
    assert int((paths.run / "worker.pid").read_text()) != worker_pid
    # The killed relay's claim rolled back with its connection; the new worker's relay marks the row.
    query = text("SELECT published_at FROM outbox WHERE event_id = :id")

    async def marked() -> bool:
        async with engine.connect() as conn:
            return await conn.scalar(query, {"id": uuid.UUID(events[0]["eventId"])}) is not None

    await eventually(marked, timeout=120, interval=0.2, what="the outbox row marked published")
