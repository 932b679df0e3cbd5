"""Chooses the patient store from settings; the API builds it per request with that request's session."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare.settings import Settings
from healthcare.stores.patients import PatientStore
from healthcare.stores.patients_pg import PostgresPatientStore


def patient_store_factory(settings: Settings) -> Callable[[AsyncSession], PatientStore]:
    if settings.patient_store == "dynamodb":
        from healthcare.stores.patients_dynamo import DynamoPatientStore, dynamodb_table

        table = dynamodb_table(settings)  # one boto3 resource per process, shared by requests
        return lambda _session: DynamoPatientStore(table)
    return PostgresPatientStore
