"""Operator tasks for the billing dead-letter topic: list what is waiting, redrive it.

A redrive hands each waiting dead letter to billing again, judged exactly as the consumer judges a
fresh event (services/billing_events.py): accepted or skipped, it is done; refused for good again, it
is parked again (a new dead letter, its redrive count one higher); refused for now, the redrive stops
at it on that partition and leaves it and what follows waiting. The redrive group's committed offset
moves past what was done, so the next `list` shows only what still waits. Redriving is safe to
repeat: billing runs are keyed by appointment, so an event already accepted is a no-op.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client as TemporalClient

from healthcare import dead_letters
from healthcare.contracts.events import AppointmentEvent, RefusalReason
from healthcare.dead_letters import DeadLetter, DeadLetterTopic
from healthcare.settings import Settings
from services import billing_events
from services.billing_events import Decision, StoredAppointment, Verdict


@dataclass
class Listed:
    letter: DeadLetter
    waiting: bool  # not yet redriven
    event: AppointmentEvent | None


async def list_dead_letters(settings: Settings, *, waiting_only: bool = True) -> list[Listed]:
    async with DeadLetterTopic(settings) as topic:
        backlog = await topic.backlog()
        letters = await topic.read(backlog, waiting_only=waiting_only)
    return [
        Listed(
            letter=letter,
            waiting=(letter.dlq_offset or 0) >= backlog.start[letter.dlq_partition or 0],
            event=billing_events.parse(letter.value),
        )
        for letter in letters
    ]


@dataclass
class RedriveResult:
    letter: DeadLetter
    decision: Decision


@dataclass
class RedriveSummary:
    outcomes: Counter[str] = field(default_factory=Counter)  # verdict -> how many
    left_waiting: int = 0  # not tried: behind one that was refused for now

    @property
    def clean(self) -> bool:
        """Everything redriven was accepted or skipped."""
        return not self.left_waiting and set(self.outcomes) <= {Verdict.accepted, Verdict.skipped}


async def redrive(
    settings: Settings,
    temporal: TemporalClient,
    engine: AsyncEngine,
    producer: AIOKafkaProducer,
    *,
    limit: int | None = None,
    summary: RedriveSummary | None = None,
) -> AsyncIterator[RedriveResult]:
    """Redrive waiting dead letters in offset order per partition (at most `limit`), yielding each
    result as it happens; `summary` (if given) is filled in as it goes."""
    summary = summary if summary is not None else RedriveSummary()
    async with DeadLetterTopic(settings) as topic:
        backlog = await topic.backlog()
        letters = await topic.read(backlog)
        stopped: set[int] = set()  # partitions where one was refused for now
        done_up_to: dict[int, int] = {}
        tried = 0
        for letter in letters:
            partition = letter.dlq_partition or 0
            if partition in stopped or (limit is not None and tried >= limit):
                summary.left_waiting += 1
                continue
            tried += 1
            decision = await _decide(settings, temporal, engine, letter)
            if decision.verdict is Verdict.park:
                assert decision.reason is not None
                try:
                    await dead_letters.park(
                        producer, topic.name, letter.refused_again(decision.reason, decision.detail)
                    )
                except Exception as exc:  # noqa: BLE001 - could not re-park: it stays where it is
                    decision = Decision(Verdict.retry, detail=f"dead-letter topic: {type(exc).__name__}")
            summary.outcomes[decision.verdict] += 1
            if decision.verdict is Verdict.retry:
                stopped.add(partition)
            else:
                done_up_to[partition] = (letter.dlq_offset or 0) + 1
                # Committed as it goes: an interrupted redrive does not repeat what it did.
                await topic.mark_handled(partition, done_up_to[partition])
            yield RedriveResult(letter, decision)


async def _decide(
    settings: Settings, temporal: TemporalClient, engine: AsyncEngine, letter: DeadLetter
) -> Decision:
    event = billing_events.parse(letter.value)
    if event is None:
        return Decision.park(RefusalReason.malformed, "not an appointment event")
    try:
        stored: dict[uuid.UUID, StoredAppointment] = await billing_events.stored_appointments(
            engine, [event.appointment_id]
        )
    except Exception as exc:  # noqa: BLE001 - the database is down: try again later
        return Decision(Verdict.retry, detail=f"appointments: {type(exc).__name__}")
    refusal = billing_events.check(
        event, stored.get(event.appointment_id), synthetic=billing_events.is_synthetic(letter.headers)
    )
    if refusal is not None:
        return refusal
    return await billing_events.bill(temporal, settings, event)
