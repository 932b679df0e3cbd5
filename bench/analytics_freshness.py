"""Analytics freshness benchmark: appointment event published -> its result received on the websocket.

Phase 1 (freshness): publishes --events events at --rate per second and matches each result to its
event by the result's `eventId`; reports p50/p95/p99/max. Phase 2 (throughput): publishes
--burst events as fast as the producer goes and reports the sustained end-to-end rate (first send
until the websocket shows the last one counted). Uses the topics of HC_TOPIC_* and a local token.

    HC_PROFILE=bench python -m bench.analytics_freshness --events 300   (with the bench stack up)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import websockets

from bench import table
from bench.common import require_own_stack, staff_token
from healthcare import clients
from healthcare.contracts.events import SYNTHETIC_HEADER
from healthcare.settings import get_settings

# Marks every event made up here: the analytics job counts it, the billing consumer skips it (its
# appointment is not stored), so a benchmark leaves no billing run behind, failed or not.
HEADERS = [(SYNTHETIC_HEADER, b"bench.analytics_freshness")]


def event_value(kind: str = "APPOINTMENT_CREATED") -> tuple[str, bytes, bytes]:
    now = datetime.now(UTC).isoformat()
    appointment = str(uuid.uuid4())
    event_id = str(uuid.uuid4())
    value = {
        "event": kind,
        "eventId": event_id,
        "appointmentId": appointment,
        "patientId": str(uuid.uuid4()),
        "doctorId": str(uuid.uuid4()),
        "time": now,
        "occurredAt": now,
    }
    return event_id, appointment.encode(), json.dumps(value).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    token = await staff_token()
    producer = clients.kafka_producer(settings, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    latencies: dict[str, float] = {}
    latest_total = -1
    progress = asyncio.Event()

    async with websockets.connect(f"{args.ws_url}?token={token}", max_queue=None) as ws:

        async def receive() -> None:
            nonlocal latest_total
            async for message in ws:
                now = time.perf_counter()
                result = json.loads(message)
                latest_total = max(latest_total, int(result["totalEventsCreated"]))
                event_id = result.get("eventId")
                if event_id in sent and event_id not in latencies:
                    latencies[event_id] = now - sent[event_id]
                progress.set()

        receiver = asyncio.create_task(receive())
        try:
            await asyncio.sleep(1.0)  # the latest result, if any, arrives first
            # Warm-up: one event, so the Python worker's first-call costs are not measured.
            await _send(producer, settings.topic_appointment_events, sent)
            await _wait(lambda: len(latencies) >= 1, progress, timeout=30)
            latencies.clear()
            sent.clear()

            interval = 1.0 / args.rate
            began = time.perf_counter()
            for i in range(args.events):
                await asyncio.sleep(max(0.0, began + i * interval - time.perf_counter()))
                await _send(producer, settings.topic_appointment_events, sent)
            await _wait(lambda: len(latencies) >= args.events, progress, timeout=30)
            fresh = [v * 1000 for v in latencies.values()]

            base = latest_total
            t0 = time.perf_counter()
            futures = []
            for _ in range(args.burst):
                _, key, value = event_value()
                futures.append(
                    await producer.send(settings.topic_appointment_events, value, key=key, headers=HEADERS)
                )
            await asyncio.gather(*futures)
            published = time.perf_counter() - t0
            await _wait(lambda: latest_total >= base + args.burst, progress, timeout=120)
            drained = time.perf_counter() - t0
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            await producer.stop()

    return {
        "events": args.events,
        "rate_per_s": args.rate,
        "matched": len(fresh),
        "freshness_ms": {
            "p50": round(percentile(fresh, 0.50), 1),
            "p95": round(percentile(fresh, 0.95), 1),
            "p99": round(percentile(fresh, 0.99), 1),
            "max": round(max(fresh), 1),
            "mean": round(statistics.fmean(fresh), 1),
        },
        "burst_events": args.burst,
        "burst_publish_s": round(published, 2),
        "sustained_events_per_s": round(args.burst / drained, 1),
        "goal_p99_le_1s": percentile(fresh, 0.99) <= 1000,
    }


async def _send(producer: Any, topic: str, sent: dict[str, float]) -> None:
    event_id, key, value = event_value()
    sent[event_id] = time.perf_counter()
    await producer.send_and_wait(topic, value, key=key, headers=HEADERS)


async def _wait(done: Any, progress: asyncio.Event, *, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not done():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError("results did not arrive in time (is the analytics job running?)")
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), timeout=min(remaining, 1.0))


def main() -> None:
    require_own_stack()
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ws-url", default=f"ws://{settings.ws_host}:{settings.ws_port}/ws/analytics")
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second in the freshness phase")
    parser.add_argument("--burst", type=int, default=3000, help="events in the throughput phase")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    table.record("analytics.freshness.p99", result["freshness_ms"]["p99"], "ms")
    table.record("analytics.sustained.rate", result["sustained_events_per_s"], "/s")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
