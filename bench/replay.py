"""Bulk replay of failed billing runs: one replayer streaming concurrently fetched histories, against
the old path (fetch, then a new replayer per history, one at a time), on the same encrypted histories.

Runs its own Temporal dev server (loopback, in memory) with a worker whose stand-in `price_visit`
refuses every doctor, so N billing runs fail the way bad events make them fail; nothing touches the
developer's stack. Prints histories per second of both paths and their ratio.

    python -m bench.replay --runs 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from healthcare import codec
from healthcare.contracts.billing import (
    DOCTOR_NOT_FOUND,
    BillingRequest,
    Price,
    PriceRequest,
    billing_workflow_id,
)
from healthcare.settings import get_settings
from ops.billing import fetched
from ops.replay import REPLAYED_WORKFLOWS, replay_stream
from ops.runs import RunFilter
from workflows import search_attributes
from workflows.billing import BillingWorkflow

TEMPORAL = Path(sys.executable).parent / "temporal"


@activity.defn(name="billing.price_visit")
async def price_visit(data: PriceRequest) -> Price:
    raise ApplicationError("doctor not found", type=DOCTOR_NOT_FOUND, non_retryable=True)


async def main(runs: int, concurrency: int) -> None:
    converter = codec.data_converter(get_settings())
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL),
        data_converter=converter,
        search_attributes=list(search_attributes.ALL),
        dev_server_extra_args=["--ip", "127.0.0.1"],
    )
    try:
        client = env.client
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        async with Worker(client, task_queue=queue, workflows=[BillingWorkflow], activities=[price_visit]):
            handles = [
                await client.start_workflow(
                    BillingWorkflow.run,
                    BillingRequest(
                        appointment_id=(a := uuid.uuid4()),
                        patient_id=uuid.uuid4(),
                        doctor_id=uuid.uuid4(),
                        appointment_time=datetime.now(UTC) + timedelta(days=1),
                        payment_terms_seconds=30 * 86400,
                    ),
                    id=billing_workflow_id(a),
                    task_queue=queue,
                )
                for _ in range(runs)
            ]
            for handle in handles:
                with contextlib.suppress(WorkflowFailureError):
                    await handle.result()
        print(f"{runs} failed billing runs made in {time.perf_counter() - started:.1f}s (encrypted payloads)")
        selection = RunFilter(status="Failed")
        # Visibility catches up with the last failures asynchronously: wait until it lists them all.
        async with asyncio.timeout(60):
            while True:
                if (await client.count_workflows(selection.query())).count >= runs:
                    break
                await asyncio.sleep(0.2)

        started = time.perf_counter()
        async for execution in client.list_workflows(selection.query()):
            history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
            replayer = Replayer(workflows=REPLAYED_WORKFLOWS, data_converter=converter)
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            assert result.replay_failure is None
        old = time.perf_counter() - started

        started = time.perf_counter()
        outcomes = [o async for o in replay_stream(fetched(client, selection, concurrency=concurrency))]
        new = time.perf_counter() - started
        assert len(outcomes) == runs and all(o.verdict == "ok" for o in outcomes)

        print(f"{'baseline: a replayer per history':<42} {runs / old:8.1f} histories/s  ({old:.1f}s)")
        streamed = f"one replayer, {concurrency} fetches at a time"
        print(f"{streamed:<42} {runs / new:8.1f} histories/s  ({new:.1f}s)")
        print(f"{'ratio (streamed / baseline)':<42} {old / new:8.1f}x")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrency))
