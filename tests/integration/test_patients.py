"""Patient records over HTTP, against both stores (PostgreSQL and DynamoDB): validation, merge updates,
pagination, and object-level authorization."""

import uuid
from datetime import UTC, date, datetime, timedelta

import httpx

from tests.integration.factories import (
    Account,
    create_doctor,
    create_patient,
    create_user,
    register_patient_user,
)

V1 = "/api/v1"


async def test_staff_create_read_merge_update(patient_api: httpx.AsyncClient, staff: Account) -> None:
    created = await create_patient(
        patient_api,
        staff,
        dateOfBirth="1980-02-29",
        gender="female",
        condition="asthma",
        attributes={"allergies": ["penicillin"], "bloodType": "A+", "smoker": False},
    )
    pid = created["id"]
    got = await patient_api.get(f"{V1}/patients/{pid}", headers=staff.headers)
    assert got.status_code == 200 and got.json() == created

    patch = {
        "condition": "asthma, controlled",
        "attributes": {"bloodType": None, "insurer": "Acme"},
        "id": "x",
    }
    refused = await patient_api.patch(f"{V1}/patients/{pid}", json=patch, headers=staff.headers)
    assert refused.status_code == 422  # `id` is not a field you can send

    patch.pop("id")
    resp = await patient_api.patch(f"{V1}/patients/{pid}", json=patch, headers=staff.headers)
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == pid
    assert body["name"] == created["name"] and body["gender"] == "female"  # untouched fields stay
    assert body["condition"] == "asthma, controlled"
    assert body["attributes"] == {"allergies": ["penicillin"], "smoker": False, "insurer": "Acme"}
    assert body["updatedAt"] > created["updatedAt"]


async def test_patient_validation(patient_api: httpx.AsyncClient, staff: Account) -> None:
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    bad = [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "Ok", "dateOfBirth": tomorrow},
        {"name": "Ok", "dateOfBirth": "31/12/1990"},
        {"name": "Ok", "unknownField": 1},
        {"name": "Ok", "attributes": "not an object"},
        {"name": "Ok", "attributes": {"blob": "x" * 20_000}},
        {},
    ]
    for body in bad:
        resp = await patient_api.post(f"{V1}/patients", json=body, headers=staff.headers)
        assert resp.status_code == 422, body
        # Rejected values are not echoed back (they may be patient data).
        assert all("input" not in err for err in resp.json()["detail"])
        assert "xxxxxxxxxx" not in resp.text
    pid = (await create_patient(patient_api, staff))["id"]
    assert (
        await patient_api.patch(f"{V1}/patients/{pid}", json={"name": None}, headers=staff.headers)
    ).status_code == 422
    assert (await patient_api.get(f"{V1}/patients/not-a-uuid", headers=staff.headers)).status_code == 422


async def test_list_pagination_and_search(patient_api: httpx.AsyncClient, staff: Account) -> None:
    tag = "Zyx" + date.today().strftime("%j") + "Q"
    for i in range(5):
        await create_patient(patient_api, staff, name=f"{tag} Person {i}")
    first = (
        await patient_api.get(f"{V1}/patients", params={"q": tag.lower(), "limit": 2}, headers=staff.headers)
    ).json()
    assert first["total"] >= 5 and first["limit"] == 2 and first["offset"] == 0 and len(first["items"]) == 2
    second = (
        await patient_api.get(
            f"{V1}/patients", params={"q": tag, "limit": 2, "offset": 2}, headers=staff.headers
        )
    ).json()
    assert {p["id"] for p in first["items"]}.isdisjoint({p["id"] for p in second["items"]})
    assert all(tag in p["name"] for p in first["items"] + second["items"])
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "ten"}):
        assert (
            await patient_api.get(f"{V1}/patients", params=params, headers=staff.headers)
        ).status_code == 422


async def test_search_ignores_case_and_accents(patient_api: httpx.AsyncClient, staff: Account) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"Zoë Łukasik {tag}", f"JOSÉ Muñoz {tag}", f"Jose Munoz {tag}", f"Ørsted Straße {tag}"]
    ids = {n: (await create_patient(patient_api, staff, name=n))["id"] for n in names}

    async def found(q: str) -> set[str]:
        resp = await patient_api.get(f"{V1}/patients", params={"q": q, "limit": 50}, headers=staff.headers)
        assert resp.status_code == 200, resp.text
        return {p["id"] for p in resp.json()["items"]}

    assert await found(f"zoe lukasik {tag}") == {ids[names[0]]}
    assert await found(f"ZOË ŁUKASIK {tag}") == {ids[names[0]]}
    assert await found(f"josé muñoz {tag}") == {ids[names[1]], ids[names[2]]}
    assert await found(f"jose munoz {tag}") == {ids[names[1]], ids[names[2]]}
    assert await found(f"orsted strasse {tag}") == {ids[names[3]]}
    assert await found(f"zoe munoz {tag}") == set()
    # LIKE wildcards in the query are plain characters, not patterns.
    assert await found(f"%{tag}") == set()


async def test_patient_sees_and_changes_only_their_own_record(
    patient_api: httpx.AsyncClient, staff: Account
) -> None:
    alice = await register_patient_user(patient_api)
    bob = await register_patient_user(patient_api)
    alice_rec = await create_patient(patient_api, alice, name="Alice Own")
    bob_rec = await create_patient(patient_api, bob, name="Bob Own")
    other = await create_patient(patient_api, staff)

    second = await patient_api.post(f"{V1}/patients", json={"name": "Alice Again"}, headers=alice.headers)
    assert second.status_code == 409

    for target in (bob_rec["id"], other["id"]):
        assert (await patient_api.get(f"{V1}/patients/{target}", headers=alice.headers)).status_code == 404
        resp = await patient_api.patch(
            f"{V1}/patients/{target}", json={"condition": "hacked"}, headers=alice.headers
        )
        assert resp.status_code == 404
    # Bob's record is unchanged by Alice's attempts.
    assert (await patient_api.get(f"{V1}/patients/{bob_rec['id']}", headers=bob.headers)).json()[
        "condition"
    ] is None

    listed = (await patient_api.get(f"{V1}/patients", params={"limit": 100}, headers=alice.headers)).json()
    assert [p["id"] for p in listed["items"]] == [alice_rec["id"]] and listed["total"] == 1
    mine = await patient_api.patch(
        f"{V1}/patients/{alice_rec['id']}", json={"condition": "flu"}, headers=alice.headers
    )
    assert mine.status_code == 200 and mine.json()["condition"] == "flu"


async def test_a_missing_record_and_someone_elses_look_the_same(
    patient_api: httpx.AsyncClient, staff: Account
) -> None:
    alice = await register_patient_user(patient_api)
    other = await create_patient(patient_api, staff)
    hidden = await patient_api.get(f"{V1}/patients/{other['id']}", headers=alice.headers)
    missing = await patient_api.get(
        f"{V1}/patients/00000000-0000-4000-8000-000000000000", headers=alice.headers
    )
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()


async def test_doctor_sees_no_patient_without_an_appointment_and_cannot_create(
    patient_api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doctor_user = await create_user(patient_api, admin, "doctor")
    await create_doctor(patient_api, admin, user=doctor_user)
    rec = await create_patient(patient_api, staff)
    assert (
        await patient_api.get(f"{V1}/patients/{rec['id']}", headers=doctor_user.headers)
    ).status_code == 404
    listed = (await patient_api.get(f"{V1}/patients", headers=doctor_user.headers)).json()
    assert listed["items"] == [] and listed["total"] == 0
    resp = await patient_api.post(f"{V1}/patients", json={"name": "By Doctor"}, headers=doctor_user.headers)
    assert resp.status_code == 403


async def test_doctors_create_and_list(
    patient_api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doc = await create_doctor(patient_api, admin, fee="85.5")
    assert doc["fee"] == "85.50"
    assert (
        await patient_api.post(
            f"{V1}/doctors", json={"name": "X", "specialty": "Y", "fee": "10"}, headers=staff.headers
        )
    ).status_code == 403
    for fee in ("0", "-5", "10.001", "abc", "1000000"):
        resp = await patient_api.post(
            f"{V1}/doctors", json={"name": "X", "specialty": "Y", "fee": fee}, headers=admin.headers
        )
        assert resp.status_code == 422, fee
    listed = (await patient_api.get(f"{V1}/doctors", params={"limit": 100}, headers=staff.headers)).json()
    assert listed["total"] >= 1 and all(set(d) >= {"id", "name", "specialty", "fee"} for d in listed["items"])
    one = await patient_api.get(f"{V1}/doctors/{doc['id']}", headers=staff.headers)
    assert one.status_code == 200 and one.json() == doc
