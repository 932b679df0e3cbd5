"""Typed keys of the search attributes defined in healthcare.contracts.search_attributes.

Workflows upsert them; the code that starts a workflow sets them (services/, the test servers).
"""

from __future__ import annotations

import uuid

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from healthcare.contracts.search_attributes import SearchAttribute

PATIENT_ID = SearchAttributeKey.for_keyword(SearchAttribute.patient_id.value)
DOCTOR_ID = SearchAttributeKey.for_keyword(SearchAttribute.doctor_id.value)
APPOINTMENT_STATUS = SearchAttributeKey.for_keyword(SearchAttribute.appointment_status.value)
ALL = (PATIENT_ID, DOCTOR_ID, APPOINTMENT_STATUS)


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
