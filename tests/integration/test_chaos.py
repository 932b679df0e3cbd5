"""The short chaos subset of `make test` (the whole suite is `make chaos`, on a stack of its own).

It runs on the test stack rather than starting a chaos stack beside it: a second full stack would
double the memory (Kafka and Flink JVMs, Temporal, PostgreSQL) and add minutes of start-up on a
small machine, and the faults chosen here only kill or freeze processes the supervisor brings back.
Every scenario ends by waiting until each component of the stack answers ready again and checks
that none is left frozen, so the tests after it find the stack as healthy as before. The invariants
are scoped to the scenario's own doctors, and the analytics drift is the change of the gap between
Flink's totals and PostgreSQL's counts, so the other tests' data does not count.
"""

from __future__ import annotations

import pytest

from bench import chaos
from healthcare.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SUBSET = [
    "worker-kill-during-pdf",
    "consumer-kill-before-commit",
    "api-kill-store-unanswered",
    "s3-down",
]


@pytest.mark.parametrize("scenario", SUBSET)
async def test_no_booking_is_lost_or_billed_twice_under(scenario: str, settings: Settings) -> None:
    result = await chaos.run_scenario(
        scenario,
        chaos.SCENARIOS[scenario],
        settings=settings,
        rate=2.0,
        count=16,
        seconds=8.0,
        s3_outage=5.0,
    )
    print(chaos.table([result]))
    assert result.faults >= 1, result.notes
    assert result.created >= 3, result.notes
    assert (result.lost, result.duplicated, result.orphaned, result.drift) == (0, 0, 0, 0), result.notes
    assert result.audit_ok
    assert not result.left_running, result.notes
