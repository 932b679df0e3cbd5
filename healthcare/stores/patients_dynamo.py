"""Amazon DynamoDB patient store: one item per patient in table `patients` (partition key `id`).

Item layout (every value a string unless noted):
  patient:   id, item_type="patient", name, date_of_birth?, gender?, condition?, attributes (map),
             user_id?, created_by?, created_at, updated_at (ISO 8601), version (number)
  user link: id="user#<user_id>", item_type="user-link", patient_id
The user link enforces one record per account (it is written in the same transaction as the
patient) and gives get_by_user a strongly consistent read; a GSI query can lag behind a write, and
a patient must see their own record the moment it exists. Absent optional fields are not stored
(DynamoDB has no use for NULL columns); reading fills them with None.

boto3 is synchronous, so each call runs in a worker thread. The store calls the Table's client
(`table.meta.client`: thread-safe, unlike resource objects), which converts between Python values
and DynamoDB's typed JSON on the way in and out.
"""

from __future__ import annotations

import asyncio
import decimal
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import boto3
from boto3.dynamodb.types import DYNAMODB_CONTEXT
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from healthcare import errors
from healthcare.clients import _aws_kwargs
from healthcare.logging import get_logger
from healthcare.models import utcnow
from healthcare.settings import Settings
from healthcare.stores.patients import PatientRecord, merge_attributes
from healthcare.text import fold

log = get_logger(__name__)

T = TypeVar("T")

PATIENT = "patient"
USER_LINK = "user-link"
BY_USER_INDEX = "by_user"
ACCOUNT_TAKEN = "this account already has a patient record"
_BATCH_GET_MAX = 100
_UPDATE_ATTEMPTS = 5
_UNPROCESSED_ATTEMPTS = 8
# Codes that mean "DynamoDB cannot serve us right now" (503); anything else is a bug and surfaces.
_UNAVAILABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "ResourceNotFoundException",
}
_OPTIONAL = ("date_of_birth", "gender", "condition", "user_id", "created_by")
_FIXED = {"id", "user_id", "attributes", "updated_at"}  # not changeable through update()


def dynamodb_table(settings: Settings) -> Any:
    """The patients Table resource; endpoint None means real AWS."""
    resource = boto3.session.Session().resource(
        "dynamodb",
        endpoint_url=settings.dynamodb_endpoint_url,
        config=BotoConfig(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=3,
            read_timeout=10,
            max_pool_connections=32,  # requests run in asyncio's thread pool, up to 32 at once
        ),
        **_aws_kwargs(settings),
    )
    return resource.Table(settings.dynamodb_patients_table)


def ensure_table(settings: Settings) -> None:
    """Create the table if missing and wait until it is active (local stack and tests only).

    Production creates the table with infrastructure code. The `by_user` index serves operational
    lookups; the store itself reads the user link item, which is strongly consistent.
    """
    table = dynamodb_table(settings)
    client, name = table.meta.client, table.name
    try:
        client.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "user_id", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
            GlobalSecondaryIndexes=[
                {
                    "IndexName": BY_USER_INDEX,
                    "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":  # already there (or being made)
            raise
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    key_schema = client.describe_table(TableName=name)["Table"]["KeySchema"]
    if key_schema != [{"AttributeName": "id", "KeyType": "HASH"}]:
        raise RuntimeError(f"DynamoDB table {name!r} exists with another key schema: {key_schema}")


# -- conversion ----------------------------------------------------------------------------------
def _to_dynamo(value: Any) -> Any:
    """JSON value -> DynamoDB value: numbers become Decimal (DynamoDB has no float type)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            raise errors.Invalid("attributes cannot hold NaN or infinite numbers")
        try:
            return DYNAMODB_CONTEXT.create_decimal(number)  # traps what DynamoDB would refuse
        except decimal.DecimalException as exc:  # over 38 significant digits, or beyond 1e125
            raise errors.Invalid("attributes hold a number outside DynamoDB's range") from exc
    if isinstance(value, dict):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    raise errors.Invalid("attributes must hold JSON values only")


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_from_dynamo(v) for v in value]
    return value


def _scalar(value: Any) -> Any:
    """A top-level field value as stored: UUIDs, dates and datetimes as ISO strings."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _to_item(record: PatientRecord) -> dict[str, Any]:
    item = {k: _scalar(v) for k, v in record.model_dump(exclude={"attributes"}).items() if v is not None}
    item["attributes"] = _to_dynamo(record.attributes)
    item["item_type"] = PATIENT
    item["version"] = 1
    return item


def _record(item: dict[str, Any]) -> PatientRecord:
    data = {k: item.get(k) for k in ("id", "name", "created_at", "updated_at", *_OPTIONAL)}
    data["attributes"] = _from_dynamo(item.get("attributes") or {})
    return PatientRecord.model_validate(data)  # parses the ISO strings back into UUID/date/datetime


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _user_link_id(user_id: uuid.UUID) -> str:
    return f"user#{user_id}"


# -- list helpers (run in a worker thread) -----------------------------------------------------
def _scan_heads(client: Any, table: str) -> list[dict[str, Any]]:
    heads: list[dict[str, Any]] = []
    pages = client.get_paginator("scan").paginate(
        TableName=table,
        ConsistentRead=True,
        ProjectionExpression="#id, #name, #type",
        FilterExpression="#type = :patient",
        ExpressionAttributeNames={"#id": "id", "#name": "name", "#type": "item_type"},
        ExpressionAttributeValues={":patient": PATIENT},
    )
    for page in pages:
        heads.extend(page.get("Items", []))
    return heads


def _batch_get(client: Any, table: str, ids: list[str], heads_only: bool) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), _BATCH_GET_MAX):
        request: dict[str, Any] = {
            "Keys": [{"id": i} for i in ids[start : start + _BATCH_GET_MAX]],
            "ConsistentRead": True,
        }
        if heads_only:
            request["ProjectionExpression"] = "#id, #name, #type"
            request["ExpressionAttributeNames"] = {"#id": "id", "#name": "name", "#type": "item_type"}
        pending: dict[str, Any] = {table: request}
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            response = client.batch_get_item(RequestItems=pending)
            found.extend(response["Responses"].get(table, []))
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(min(0.05 * 2**attempt, 2.0))  # throttled or over 16 MB: back off, ask again
        else:
            raise errors.DependencyUnavailable("the patient store is unavailable")
    return found


class DynamoPatientStore:
    """PatientStore on DynamoDB, with the same semantics as PostgresPatientStore."""

    def __init__(self, table: Any) -> None:
        self._client = table.meta.client
        self._table: str = table.name

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(self._guarded, fn, *args, **kwargs)

    @staticmethod
    def _guarded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Only the operation and error code are logged: requests and responses hold patient data.
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            if _code(exc) not in _UNAVAILABLE:
                raise
            log.warning("patient store unavailable", store="dynamodb", code=_code(exc))
            raise errors.DependencyUnavailable("the patient store is unavailable") from exc
        except BotoCoreError as exc:
            log.warning("patient store unreachable", store="dynamodb", error=type(exc).__name__)
            raise errors.DependencyUnavailable("the patient store is unavailable") from exc

    async def _get_item(self, key: str, projection: str | None = None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"TableName": self._table, "Key": {"id": key}, "ConsistentRead": True}
        if projection:
            names = {f"#p{i}": n for i, n in enumerate(projection.split(","))}
            kwargs["ProjectionExpression"] = ",".join(names)
            kwargs["ExpressionAttributeNames"] = names
        response = await self._run(self._client.get_item, **kwargs)
        item: dict[str, Any] | None = response.get("Item")
        return item

    # -- PatientStore --------------------------------------------------------------------------
    async def create(self, record: PatientRecord) -> PatientRecord:
        item = _to_item(record)
        patient_put = {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#id)",
            "ExpressionAttributeNames": {"#id": "id"},
        }
        if record.user_id is None:
            try:
                await self._run(self._client.put_item, **patient_put)
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    raise errors.Conflict("a patient record with this id already exists") from exc
                raise
        else:
            link = {"id": _user_link_id(record.user_id), "item_type": USER_LINK, "patient_id": item["id"]}
            link_put = {**patient_put, "Item": link}
            await self._create_linked(patient_put, link_put)
        return _record(_from_dynamo(item))

    async def _create_linked(self, patient_put: dict[str, Any], link_put: dict[str, Any]) -> None:
        for attempt in range(3):
            try:
                await self._run(
                    self._client.transact_write_items,
                    TransactItems=[{"Put": patient_put}, {"Put": link_put}],
                )
                return
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    raise errors.Conflict(ACCOUNT_TAKEN) from exc
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise errors.Conflict("a patient record with this id already exists") from exc
                if "TransactionConflict" not in reasons or attempt == 2:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))  # a concurrent create for this account

    async def get(self, patient_id: uuid.UUID) -> PatientRecord | None:
        item = await self._get_item(str(patient_id))
        return _record(item) if item and item.get("item_type") == PATIENT else None

    async def get_by_user(self, user_id: uuid.UUID) -> PatientRecord | None:
        link = await self._get_item(_user_link_id(user_id), "patient_id")
        return await self.get(uuid.UUID(link["patient_id"])) if link else None

    async def exists(self, patient_id: uuid.UUID) -> bool:
        item = await self._get_item(str(patient_id), "id,item_type")
        return item is not None and item.get("item_type") == PATIENT

    async def update(
        self, patient_id: uuid.UUID, fields: dict[str, Any], attributes: dict[str, Any] | None
    ) -> PatientRecord | None:
        fixed = _FIXED.intersection(fields)
        if fixed:
            raise ValueError(f"update() cannot change {sorted(fixed)}")
        if "name" in fields and fields["name"] is None:
            raise ValueError("name cannot be removed")
        # Fields alone: one conditional UpdateItem. Attributes: read, merge, then write only if the
        # version is unchanged (optimistic locking, retried), so concurrent merges never lose keys.
        for _ in range(_UPDATE_ATTEMPTS):
            merged: dict[str, Any] | None = None
            expected: int | None = None
            if attributes is not None:
                current = await self._get_item(str(patient_id), "attributes,version,item_type")
                if current is None or current.get("item_type") != PATIENT:
                    return None
                merged = merge_attributes(_from_dynamo(current.get("attributes") or {}), attributes)
                expected = int(current["version"])
            try:
                return await self._write_update(patient_id, fields, merged, expected)
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                if expected is None:
                    return None  # no such patient
        raise errors.Conflict("the patient record is being changed by someone else; try again")

    async def _write_update(
        self,
        patient_id: uuid.UUID,
        fields: dict[str, Any],
        attributes: dict[str, Any] | None,
        expected_version: int | None,
    ) -> PatientRecord:
        names = {"#id": "id", "#type": "item_type", "#updated": "updated_at", "#version": "version"}
        values: dict[str, Any] = {":patient": PATIENT, ":now": utcnow().isoformat(), ":one": 1}
        sets, removes = ["#updated = :now"], []
        changes = dict(fields)
        if attributes is not None:
            changes["attributes"] = _to_dynamo(attributes)
        for i, (key, value) in enumerate(changes.items()):
            names[f"#f{i}"] = key
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":f{i}"] = _scalar(value)
                sets.append(f"#f{i} = :f{i}")
        expression = "SET " + ", ".join(sets) + " ADD #version :one"
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        condition = "attribute_exists(#id) AND #type = :patient"
        if expected_version is not None:
            condition += " AND #version = :expected"
            values[":expected"] = expected_version
        response = await self._run(
            self._client.update_item,
            TableName=self._table,
            Key={"id": str(patient_id)},
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return _record(response["Attributes"])

    async def list(
        self, *, limit: int, offset: int, q: str | None, only_ids: Iterable[uuid.UUID] | None
    ) -> tuple[list[PatientRecord], int]:
        """Ordered by name then id, like PostgreSQL's `ORDER BY name, id` under the C collation.

        Two passes: (id, name) of every candidate, then the full items of one page only. Without
        `only_ids` the first pass is a Scan, fine for a clinic's patient count; a deployment with
        very many patients would serve name search and ordering from a name index or a search
        service instead.
        """
        if only_ids is not None:
            wanted = list(dict.fromkeys(str(i) for i in only_ids))
            heads = await self._run(_batch_get, self._client, self._table, wanted, True)
        else:
            heads = await self._run(_scan_heads, self._client, self._table)
        heads = [h for h in heads if h.get("item_type") == PATIENT]
        if q:
            needle = fold(q)
            heads = [h for h in heads if needle in fold(h["name"])]
        # Lower-case hex UUID strings sort like PostgreSQL's byte-wise uuid order.
        heads.sort(key=lambda h: (h["name"], h["id"]))
        page = [h["id"] for h in heads[offset : offset + limit]]
        if not page:
            return [], len(heads)
        items = {i["id"]: i for i in await self._run(_batch_get, self._client, self._table, page, False)}
        return [_record(items[i]) for i in page if i in items], len(heads)
