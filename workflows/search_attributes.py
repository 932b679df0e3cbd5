"""Typed keys of the search attributes defined in healthcare.contracts.search_attributes.

Workflows upsert them; the code that starts a workflow sets them (services/, the test servers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from healthcare.contracts.search_attributes import TYPES, SearchAttribute

PATIENT_ID = SearchAttributeKey.for_keyword(SearchAttribute.patient_id.value)
DOCTOR_ID = SearchAttributeKey.for_keyword(SearchAttribute.doctor_id.value)
APPOINTMENT_STATUS = SearchAttributeKey.for_keyword(SearchAttribute.appointment_status.value)
BILLING_STATUS = SearchAttributeKey.for_keyword(SearchAttribute.billing_status.value)
ALL = (PATIENT_ID, DOCTOR_ID, APPOINTMENT_STATUS, BILLING_STATUS)


def parties(
    patient_id: uuid.UUID, doctor_id: uuid.UUID, *more: SearchAttributePair[str]
) -> TypedSearchAttributes:
    """What every appointment and billing run is found by in the Temporal UI: its patient and doctor."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(PATIENT_ID, str(patient_id)),
            SearchAttributePair(DOCTOR_ID, str(doctor_id)),
            *more,
        ]
    )


async def register(client: Client, namespace: str, names: Iterable[str] | None = None) -> None:
    """Add our search attributes (these, or all) to a namespace, with their types (the local stack
    and the test servers; a production namespace gets them from its operators)."""
    wanted = [SearchAttribute(n) for n in names] if names is not None else list(SearchAttribute)
    if not wanted:
        return
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={
                a.value: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{TYPES[a].upper()}") for a in wanted
            },
        )
    )
