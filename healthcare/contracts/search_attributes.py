"""Search attributes: the Temporal UI's filters on our workflows, defined once.

The local stack registers each of these with its type; workflows and the code that starts them set
them through the typed keys in `workflows/search_attributes.py`, which are built from this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class SearchAttribute(StrEnum):
    patient_id = "PatientId"
    doctor_id = "DoctorId"
    # An AppointmentStatus, or the run states RUN_PENDING / RUN_REJECTED (healthcare.contracts.appointments).
    appointment_status = "AppointmentStatus"
    # A BillingRunStatus while a billing run waits for an operator; unset otherwise.
    billing_status = "BillingStatus"


# Each attribute's indexed value type, as Temporal names it (`--search-attribute NAME=TYPE`).
TYPES: Mapping[SearchAttribute, str] = {attribute: "Keyword" for attribute in SearchAttribute}
