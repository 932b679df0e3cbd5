"""DynamoPatientStore against moto's in-process DynamoDB: the PatientStore semantics, item by item."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from moto import mock_aws

from healthcare import errors
from healthcare.models import utcnow
from healthcare.settings import Settings
from healthcare.stores.patients import PatientRecord
from healthcare.stores.patients_dynamo import DynamoPatientStore, dynamodb_table, ensure_table


@pytest.fixture(scope="module")
def dynamo_settings() -> Settings:
    return Settings(dynamodb_endpoint_url=None, dynamodb_patients_table="patients-unit")


@pytest.fixture(scope="module")
def module_table(dynamo_settings: Settings) -> Iterator[Any]:
    # One in-process fake per module (building boto3 sessions is the slow part); tests empty it.
    with mock_aws():
        ensure_table(dynamo_settings)
        yield dynamodb_table(dynamo_settings)


@pytest.fixture
def table(module_table: Any) -> Any:
    with module_table.batch_writer() as batch:
        for item in module_table.scan(ProjectionExpression="id")["Items"]:
            batch.delete_item(Key={"id": item["id"]})
    return module_table


@pytest.fixture
def store(table: Any) -> DynamoPatientStore:
    return DynamoPatientStore(table)


def make(name: str = "Ada Lovelace", **overrides: Any) -> PatientRecord:
    now = utcnow()
    values: dict[str, Any] = {"id": uuid.uuid4(), "name": name, "created_at": now, "updated_at": now}
    values.update(overrides)
    return PatientRecord(**values)


def scan_all(table: Any) -> list[dict[str, Any]]:
    return list(table.scan()["Items"])


async def test_create_then_get_round_trips_every_field(store: DynamoPatientStore) -> None:
    record = make(
        date_of_birth=date(1990, 5, 17),
        gender="female",
        condition="asthma",
        attributes={
            "height_cm": 171.5,
            "visits": 3,
            "smoker": False,
            "allergies": ["peanuts", {"severity": 0.25}],
            "notes": None,
            "nested": {"a": {"b": -7}},
        },
        user_id=uuid.uuid4(),
        created_by=uuid.uuid4(),
    )
    created = await store.create(record)
    assert created == record
    fetched = await store.get(record.id)
    assert fetched == record
    assert isinstance(fetched.attributes["visits"], int)
    assert isinstance(fetched.attributes["height_cm"], float)
    assert fetched.created_at.tzinfo is not None


async def test_missing_records_answer_none(store: DynamoPatientStore) -> None:
    assert await store.get(uuid.uuid4()) is None
    assert await store.get_by_user(uuid.uuid4()) is None
    assert await store.exists(uuid.uuid4()) is False
    assert await store.update(uuid.uuid4(), {"name": "X"}, None) is None
    assert await store.update(uuid.uuid4(), {}, {"k": 1}) is None


async def test_exists_and_get_by_user(store: DynamoPatientStore) -> None:
    user = uuid.uuid4()
    mine = await store.create(make("Mine", user_id=user))
    other = await store.create(make("Unlinked"))
    assert await store.exists(mine.id) and await store.exists(other.id)
    assert await store.get_by_user(user) == mine


async def test_second_record_for_the_same_account_conflicts(store: DynamoPatientStore, table: Any) -> None:
    user = uuid.uuid4()
    first = await store.create(make("First", user_id=user))
    second = make("Second", user_id=user)
    with pytest.raises(errors.Conflict) as caught:
        await store.create(second)
    assert caught.value.message == "this account already has a patient record"
    assert await store.get(second.id) is None  # the transaction wrote nothing
    assert await store.get_by_user(user) == first
    assert len(scan_all(table)) == 2  # the patient and its user link


async def test_duplicate_id_conflicts(store: DynamoPatientStore) -> None:
    record = await store.create(make())
    with pytest.raises(errors.Conflict):
        await store.create(make("Other", id=record.id))
    with pytest.raises(errors.Conflict):
        await store.create(make("Other", id=record.id, user_id=uuid.uuid4()))
    assert (await store.get(record.id)) == record


async def test_update_sets_fields_and_merges_attributes(store: DynamoPatientStore) -> None:
    record = await store.create(
        make(gender="male", condition="flu", attributes={"keep": 1, "drop": "x", "change": [1]})
    )
    updated = await store.update(
        record.id,
        {"name": "Renamed", "gender": None, "date_of_birth": date(2000, 1, 2)},
        {"drop": None, "change": {"now": "a map"}, "added": 2.5, "absent": None},
    )
    assert updated is not None
    assert updated.id == record.id
    assert updated.name == "Renamed"
    assert updated.gender is None
    assert updated.condition == "flu"
    assert updated.date_of_birth == date(2000, 1, 2)
    assert updated.attributes == {"keep": 1, "change": {"now": "a map"}, "added": 2.5}
    assert updated.created_at == record.created_at
    assert updated.updated_at > record.updated_at
    assert await store.get(record.id) == updated


async def test_update_without_attributes_keeps_them(store: DynamoPatientStore) -> None:
    record = await store.create(make(attributes={"a": 1}))
    updated = await store.update(record.id, {"condition": "healthy"}, None)
    assert updated is not None and updated.attributes == {"a": 1} and updated.condition == "healthy"
    cleared = await store.update(record.id, {}, {"a": None})
    assert cleared is not None and cleared.attributes == {}


def test_ensure_table_is_idempotent_and_indexes_users(dynamo_settings: Settings, table: Any) -> None:
    ensure_table(dynamo_settings)
    description = table.meta.client.describe_table(TableName=table.name)["Table"]
    assert description["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert [i["IndexName"] for i in description["GlobalSecondaryIndexes"]] == ["by_user"]


async def test_a_write_between_read_and_write_is_not_lost(
    store: DynamoPatientStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto's in-process fake is not atomic across threads, so the race is staged, not raced.
    record = await store.create(make(attributes={"a": 1}))
    real_get = store._get_item
    reads = 0

    async def racing_get(key: str, projection: str | None = None) -> dict[str, Any] | None:
        nonlocal reads
        item = await real_get(key, projection)
        reads += 1
        if reads == 1:  # someone else merges after our read, before our write
            await store.update(record.id, {}, {"b": 2})
        return item

    monkeypatch.setattr(store, "_get_item", racing_get)
    updated = await store.update(record.id, {}, {"c": 3})
    assert updated is not None and updated.attributes == {"a": 1, "b": 2, "c": 3}
    assert reads == 3  # ours, the other writer's, ours again after the version check failed


async def test_an_endlessly_contended_update_conflicts(
    store: DynamoPatientStore, table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await store.create(make())
    real_get = store._get_item

    async def always_raced(key: str, projection: str | None = None) -> dict[str, Any] | None:
        item = await real_get(key, projection)
        await asyncio.to_thread(
            table.update_item,
            Key={"id": str(record.id)},
            UpdateExpression="ADD #v :one",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":one": 1},
        )
        return item

    monkeypatch.setattr(store, "_get_item", always_raced)
    with pytest.raises(errors.Conflict):
        await store.update(record.id, {}, {"k": 1})


async def test_update_refuses_fixed_fields(store: DynamoPatientStore) -> None:
    record = await store.create(make())
    with pytest.raises(ValueError, match="cannot change"):
        await store.update(record.id, {"user_id": uuid.uuid4()}, None)


async def test_numbers_dynamodb_cannot_hold_are_invalid(store: DynamoPatientStore) -> None:
    with pytest.raises(errors.Invalid):
        await store.create(make(attributes={"x": float("nan")}))
    with pytest.raises(errors.Invalid):
        await store.create(make(attributes={"x": 10**40 + 1}))


async def test_list_orders_by_name_then_id_and_counts(store: DynamoPatientStore) -> None:
    ids = sorted(uuid.uuid4() for _ in range(2))
    # C collation: upper case sorts before lower case; equal names fall back to the id.
    for record in (
        make("bob"),
        make("Alice", id=ids[1]),
        make("Zed", user_id=uuid.uuid4()),
        make("Alice", id=ids[0]),
    ):
        await store.create(record)
    items, total = await store.list(limit=10, offset=0, q=None, only_ids=None)
    assert total == 4  # user link items are not patients
    assert [(p.name, p.id) for p in items][:2] == [("Alice", ids[0]), ("Alice", ids[1])]
    assert [p.name for p in items] == ["Alice", "Alice", "Zed", "bob"]
    page, total = await store.list(limit=2, offset=1, q=None, only_ids=None)
    assert [p.name for p in page] == ["Alice", "Zed"] and total == 4
    empty, total = await store.list(limit=5, offset=10, q=None, only_ids=None)
    assert empty == [] and total == 4


async def test_list_filters_by_name_case_insensitively(store: DynamoPatientStore) -> None:
    for name in ("Maria Garcia", "MARIO Rossi", "Anne Marie", "Bob"):
        await store.create(make(name))
    items, total = await store.list(limit=10, offset=0, q="mAr", only_ids=None)
    assert [p.name for p in items] == ["Anne Marie", "MARIO Rossi", "Maria Garcia"] and total == 3
    items, total = await store.list(limit=1, offset=1, q="mar", only_ids=None)
    assert [p.name for p in items] == ["MARIO Rossi"] and total == 3
    assert await store.list(limit=10, offset=0, q="%", only_ids=None) == ([], 0)


async def test_list_restricted_to_ids(store: DynamoPatientStore) -> None:
    created = [await store.create(make(f"Patient {i:03d}")) for i in range(130)]
    wanted = {p.id for p in created[5:125]} | {uuid.uuid4()}  # over one BatchGetItem; one unknown id
    items, total = await store.list(limit=200, offset=0, q=None, only_ids=wanted)
    assert total == 120
    assert [p.id for p in items] == [p.id for p in created[5:125]]
    items, total = await store.list(limit=3, offset=0, q="patient 01", only_ids=wanted)
    assert [p.name for p in items] == ["Patient 010", "Patient 011", "Patient 012"] and total == 10
    assert await store.list(limit=10, offset=0, q=None, only_ids=set()) == ([], 0)


async def test_unreachable_dynamodb_is_a_dependency_error() -> None:
    settings = Settings(dynamodb_endpoint_url="http://127.0.0.1:9", dynamodb_patients_table="nowhere")
    store = DynamoPatientStore(dynamodb_table(settings))
    with pytest.raises(errors.DependencyUnavailable):
        await store.get(uuid.uuid4())
