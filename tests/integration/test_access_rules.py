"""The access rules (services/access.py) called directly on the test stack's PostgreSQL: who sees
which patient, appointment and invoice, and that each read and list is audited.

The routes' tests (test_access.py and others) show the rules through the API; these pin each rule
and each query of the module on its own, so `make mutation` can score it (the module is all SQL
and role checks: without a database no test reaches it). They need only PostgreSQL.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import errors
from healthcare.contracts.appointments import AppointmentStatus
from healthcare.models import Appointment, Doctor, Invoice, Patient, Role, User
from healthcare.stores.patients_pg import PostgresPatientStore
from services import access
from services.context import Actor, RequestContext

_slots = itertools.count(1)


def _slot() -> datetime:
    """A slot of its own (the database refuses overlapping bookings of a doctor or a patient; each
    clinic's doctors and patients are new, so only its own slots must differ)."""
    return datetime(2030, 1, 1, tzinfo=UTC) + timedelta(hours=next(_slots))


@dataclass(frozen=True)
class Clinic:
    """Two doctors with logins and two patients with logins, plus a doctor without a login."""

    admin: Actor
    staff: Actor
    doctor: Actor  # sees `mine` (booked) and `done` (completed), not `gone` (cancelled only)
    other_doctor: Actor
    unlinked_doctor: Actor  # a doctor login with no doctor record
    patient: Actor  # `mine`
    unlinked_patient: Actor  # a patient login with no record
    doctor_id: uuid.UUID
    other_doctor_id: uuid.UUID
    mine: uuid.UUID
    done: uuid.UUID
    gone: uuid.UUID
    others: uuid.UUID  # a patient of the other doctor only
    visit: uuid.UUID  # mine with doctor
    other_visit: uuid.UUID  # others with other_doctor
    invoice: uuid.UUID  # of visit
    other_invoice: uuid.UUID  # of other_visit


def _actor(role: Role) -> tuple[User, Actor]:
    user = User(email=f"access-{uuid.uuid4().hex[:12]}@example.test", password_hash="!", role=role.value)
    return user, Actor(user_id=user.id, role=role, email=user.email)


@pytest.fixture
async def clinic(owner_engine: AsyncEngine) -> Clinic:
    roles = {
        "admin": Role.admin,
        "staff": Role.staff,
        "doctor": Role.doctor,
        "other": Role.doctor,
        "unlinked": Role.doctor,
        "patient": Role.patient,
        "lonely": Role.patient,
    }
    users = {name: _actor(role) for name, role in roles.items()}
    doctor = Doctor(name="Dr A", specialty="gp", fee=Decimal("10.00"), user_id=users["doctor"][0].id)
    other = Doctor(name="Dr B", specialty="gp", fee=Decimal("10.00"), user_id=users["other"][0].id)
    mine = Patient(name="Mine", user_id=users["patient"][0].id)
    done, gone, others = Patient(name="Done"), Patient(name="Gone"), Patient(name="Others")

    def visit(patient: Patient, doc: Doctor, status: AppointmentStatus) -> Appointment:
        start = _slot()
        return Appointment(
            patient_id=patient.id,
            doctor_id=doc.id,
            time=start,
            end_time=start + timedelta(minutes=30),
            status=status.value,
            workflow_id=f"appointment-{uuid.uuid4()}",
        )

    booked = visit(mine, doctor, AppointmentStatus.booked)
    other_visit = visit(others, other, AppointmentStatus.booked)
    visits = [
        booked,
        visit(done, doctor, AppointmentStatus.completed),
        visit(gone, doctor, AppointmentStatus.cancelled),
        visit(others, other, AppointmentStatus.completed),
        other_visit,
    ]

    def invoice(appointment: Appointment) -> Invoice:
        return Invoice(
            id=uuid.uuid4(),
            appointment_id=appointment.id,
            patient_id=appointment.patient_id,
            doctor_id=appointment.doctor_id,
            amount=Decimal("10.00"),
            workflow_id=f"billing-{appointment.id}",
            due_at=appointment.time + timedelta(days=30),
        )

    invoices = [invoice(booked), invoice(other_visit)]
    async with AsyncSession(owner_engine, expire_on_commit=False) as session:
        session.add_all([user for user, _ in users.values()])
        await session.flush()
        session.add_all([doctor, other, mine, done, gone, others])
        await session.flush()
        session.add_all(visits)
        await session.flush()
        session.add_all(invoices)
        await session.commit()
    return Clinic(
        admin=users["admin"][1],
        staff=users["staff"][1],
        doctor=users["doctor"][1],
        other_doctor=users["other"][1],
        unlinked_doctor=users["unlinked"][1],
        patient=users["patient"][1],
        unlinked_patient=users["lonely"][1],
        doctor_id=doctor.id,
        other_doctor_id=other.id,
        mine=mine.id,
        done=done.id,
        gone=gone.id,
        others=others.id,
        visit=booked.id,
        other_visit=other_visit.id,
        invoice=invoices[0].id,
        other_invoice=invoices[1].id,
    )


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine, expire_on_commit=False) as s:
        yield s


def _ctx(actor: Actor, audit_key: bytes) -> RequestContext:
    return RequestContext(
        actor=actor, client_ip="127.0.0.1", request_id=f"access-{uuid.uuid4()}", audit_key=audit_key
    )


async def _audited(
    owner_engine: AsyncEngine, request_id: str
) -> list[tuple[str, str, str | None, str, str | None]]:
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT action, resource_type, resource_id, outcome, actor_id::text FROM audit_log"
                " WHERE request_id = :r ORDER BY seq"
            ),
            {"r": request_id},
        )
        return [tuple(row) for row in rows]


async def test_doctor_id_of_is_the_doctor_record_of_a_doctor_login_only(
    session: AsyncSession, clinic: Clinic
) -> None:
    assert await access.doctor_id_of(session, clinic.doctor) == clinic.doctor_id
    assert await access.doctor_id_of(session, clinic.other_doctor) == clinic.other_doctor_id
    assert await access.doctor_id_of(session, clinic.unlinked_doctor) is None
    # A patient's user id never resolves to a doctor, even one whose login it were.
    as_patient = Actor(user_id=clinic.doctor.user_id, role=Role.patient, email=clinic.doctor.email)
    assert await access.doctor_id_of(session, as_patient) is None


async def test_visible_patients_follow_the_role_and_the_care(session: AsyncSession, clinic: Clinic) -> None:
    store = PostgresPatientStore(session)
    assert await access.visible_patient_ids(session, store, clinic.admin) is None
    assert await access.visible_patient_ids(session, store, clinic.staff) is None
    assert await access.visible_patient_ids(session, store, clinic.patient) == {clinic.mine}
    assert await access.visible_patient_ids(session, store, clinic.unlinked_patient) == set()
    # Booked and completed visits give a doctor the record; a cancelled one alone does not.
    assert await access.visible_patient_ids(session, store, clinic.doctor) == {clinic.mine, clinic.done}
    assert await access.visible_patient_ids(session, store, clinic.other_doctor) == {clinic.others}
    assert await access.visible_patient_ids(session, store, clinic.unlinked_doctor) == set()
    assert await access.patients_in_care(session, clinic.doctor_id) == {clinic.mine, clinic.done}
    assert await access.patients_in_care(session, uuid.uuid4()) == set()


async def test_can_see_patient(session: AsyncSession, clinic: Clinic) -> None:
    store = PostgresPatientStore(session)
    for patient in (clinic.mine, clinic.gone, clinic.others, uuid.uuid4()):
        assert await access.can_see_patient(session, store, clinic.staff, patient)
    assert await access.can_see_patient(session, store, clinic.patient, clinic.mine)
    assert not await access.can_see_patient(session, store, clinic.patient, clinic.done)
    assert await access.can_see_patient(session, store, clinic.doctor, clinic.done)
    assert not await access.can_see_patient(session, store, clinic.doctor, clinic.gone)
    assert not await access.can_see_patient(session, store, clinic.doctor, clinic.others)
    assert not await access.can_see_patient(session, store, clinic.unlinked_doctor, clinic.mine)


async def test_care_scope_confines_patients_and_doctors_and_matches_nothing_without_a_record(
    session: AsyncSession, clinic: Clinic
) -> None:
    store = PostgresPatientStore(session)
    nothing = uuid.UUID(int=0)
    assert await access.care_scope(session, store, clinic.admin) == (None, None)
    assert await access.care_scope(session, store, clinic.staff) == (None, None)
    assert await access.care_scope(session, store, clinic.patient) == (clinic.mine, None)
    assert await access.care_scope(session, store, clinic.unlinked_patient) == (nothing, None)
    assert await access.care_scope(session, store, clinic.doctor) == (None, clinic.doctor_id)
    assert await access.care_scope(session, store, clinic.unlinked_doctor) == (None, nothing)


async def test_within_care_scope(session: AsyncSession, clinic: Clinic) -> None:
    store = PostgresPatientStore(session)

    async def within(actor: Actor, patient: uuid.UUID, doctor: uuid.UUID) -> bool:
        return await access.within_care_scope(session, store, actor, patient_id=patient, doctor_id=doctor)

    assert await within(clinic.staff, clinic.others, clinic.other_doctor_id)
    assert await within(clinic.patient, clinic.mine, clinic.other_doctor_id)  # any doctor of theirs
    assert not await within(clinic.patient, clinic.others, clinic.doctor_id)
    assert await within(clinic.doctor, clinic.others, clinic.doctor_id)  # any patient of theirs
    assert not await within(clinic.doctor, clinic.mine, clinic.other_doctor_id)
    assert not await within(clinic.unlinked_patient, clinic.mine, clinic.doctor_id)


async def test_visible_record_is_the_row_only_for_those_in_its_care(
    session: AsyncSession, clinic: Clinic
) -> None:
    store = PostgresPatientStore(session)
    for actor in (clinic.admin, clinic.patient, clinic.doctor):
        row = await access.visible_record(session, store, actor, Appointment, clinic.visit)
        assert row is not None and row.id == clinic.visit
        bill = await access.visible_record(session, store, actor, Invoice, clinic.invoice)
        assert bill is not None and bill.id == clinic.invoice
    for actor in (clinic.patient, clinic.doctor, clinic.unlinked_doctor):
        assert await access.visible_record(session, store, actor, Appointment, clinic.other_visit) is None
        assert await access.visible_record(session, store, actor, Invoice, clinic.other_invoice) is None
    assert await access.visible_record(session, store, clinic.admin, Invoice, uuid.uuid4()) is None


async def test_read_care_record_audits_a_read_and_a_denial(
    session: AsyncSession, clinic: Clinic, owner_engine: AsyncEngine, audit_key: bytes
) -> None:
    store = PostgresPatientStore(session)
    ctx = _ctx(clinic.patient, audit_key)
    row = await access.read_care_record(
        session, store, ctx, Invoice, clinic.invoice, resource_type="invoice", not_found="no such invoice"
    )
    assert row.id == clinic.invoice
    assert ctx.request_id is not None
    actor = str(clinic.patient.user_id)
    assert await _audited(owner_engine, ctx.request_id) == [
        ("read", "invoice", str(clinic.invoice), "ok", actor)
    ]

    denied = _ctx(clinic.patient, audit_key)
    with pytest.raises(errors.NotFound, match="no such appointment"):
        await access.read_care_record(
            session,
            store,
            denied,
            Appointment,
            clinic.other_visit,
            resource_type="appointment",
            not_found="no such appointment",
            action="cancel",
        )
    assert denied.request_id is not None
    assert await _audited(owner_engine, denied.request_id) == [
        ("cancel", "appointment", str(clinic.other_visit), "denied", actor)
    ]


async def test_list_care_records_is_confined_paged_and_audited_per_item(
    session: AsyncSession, clinic: Clinic, owner_engine: AsyncEngine, audit_key: bytes
) -> None:
    store = PostgresPatientStore(session)
    ours = [col(Appointment.id).in_([clinic.visit, clinic.other_visit])]
    order = [col(Appointment.time), col(Appointment.id)]

    async def listed(
        actor: Actor, limit: int = 10, offset: int = 0
    ) -> tuple[list[uuid.UUID], int, list[str | None]]:
        ctx = _ctx(actor, audit_key)
        rows, total = await access.list_care_records(
            session,
            store,
            ctx,
            Appointment,
            where=ours,
            order_by=order,
            limit=limit,
            offset=offset,
            resource_type="appointment",
        )
        assert ctx.request_id is not None
        audited = await _audited(owner_engine, ctx.request_id)
        assert {(a, t, o) for a, t, _, o, _ in audited} == {("list", "appointment", "ok")}
        assert {who for *_, who in audited} == {str(actor.user_id)}
        return [row.id for row in rows], total, [rid for _, _, rid, _, _ in audited]

    ids, total, audited = await listed(clinic.staff)
    assert (
        set(ids) == {clinic.visit, clinic.other_visit}
        and total == 2
        and sorted(audited, key=str) == sorted(map(str, ids), key=str)
    )
    assert await listed(clinic.patient) == ([clinic.visit], 1, [str(clinic.visit)])
    assert await listed(clinic.doctor) == ([clinic.visit], 1, [str(clinic.visit)])
    assert await listed(clinic.other_doctor) == ([clinic.other_visit], 1, [str(clinic.other_visit)])
    # Nothing in scope still leaves one record of the list, without a resource.
    assert await listed(clinic.unlinked_patient) == ([], 0, [None])
    # A page: the limit and offset are the caller's, the total is of all that match.
    first, total, _ = await listed(clinic.staff, limit=1)
    second, _, _ = await listed(clinic.staff, limit=1, offset=1)
    assert total == 2 and len(first) == 1 and len(second) == 1 and set(first + second) == set(ids)
