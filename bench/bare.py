"""The Temporal ceiling: the booking → billing pipeline's shape doing no work, on the same server.

Run by `make bench`, or with the bench stack up (`HC_PROFILE=bench make up`):
`HC_PROFILE=bench python -m bench.bare [--seconds 20] [--concurrency 16]`.

The same number of workflows, updates, local activities, activities, search-attribute upserts and
timers per appointment as the real path (bench/bare_workflows.py says how they were counted), run
against the stack's Temporal server by a worker built with the platform's worker settings
(workers.temporal_worker.worker_options) in a process of its own, on a task queue of its own.
Nothing else happens: no database, no Kafka, no Lambda. So no design built on this Temporal server
can book or bill faster on this machine, and its CPU per item is the floor under ours.

Two phases, each closed-loop at `--concurrency` clients:
- booking: update-with-start of BareAppointment (`book` answers once "stored"); bookings/s, latency;
- pipeline: the booking, then the start of its BareBilling run (what the billing consumer does on
  APPOINTMENT_CREATED); an item is done when its `issue` local activity ran. Items/s, latency.
Each prints the CPU per item of the Temporal server, the bare worker and this driver (the API's and
the consumer's Temporal client part), and records the figures for the table (bench.table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import SearchAttributePair, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.worker import Worker

from bench import table
from bench.bare_workflows import STATUS, BareAppointment, BareBilling
from bench.common import Run, component_cpu_seconds, cpu_used, load, process_cpu_seconds, require_own_stack
from healthcare import clients
from healthcare.settings import get_settings
from workers.temporal_worker import worker_options
from workflows import search_attributes

PIPELINE_DONE = "done"


# -- The bare worker (a process of its own) ------------------------------------------------------
@activity.defn(name="bare.check_parties")
async def check_parties(request: dict[str, Any]) -> None:
    return None


@activity.defn(name="bare.store")
async def store(request: dict[str, Any]) -> dict[str, Any]:
    return {"id": request["id"], "status": "SCHEDULED"}


@activity.defn(name="bare.price_visit")
async def price_visit(request: dict[str, Any]) -> dict[str, Any]:
    return {"amount": "100.00", "currency": "EUR"}


@activity.defn(name="bare.record_invoice")
async def record_invoice(request: dict[str, Any]) -> dict[str, Any]:
    return {"id": request["id"], "began": request["began"], "status": "PENDING"}


@activity.defn(name="bare.render_pdf")
async def render_pdf(invoice: dict[str, Any]) -> dict[str, Any]:
    return {**invoice, "key": f"invoices/{invoice['id']}.pdf"}


@activity.defn(name="bare.issue")
async def issue(pdf: dict[str, Any]) -> None:
    # One line per finished item on stdout: the driver counts them (time.time(): another process).
    print(PIPELINE_DONE, pdf["id"], (time.time() - pdf["began"]) * 1000, flush=True)


async def serve(task_queue: str) -> None:
    settings = get_settings()
    client = await clients.temporal_client(settings)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareAppointment, BareBilling],
        activities=[check_parties, store, price_visit, record_invoice, render_pdf, issue],
        **worker_options(settings),
    )
    async with worker:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the driver closes it


# -- The driver -------------------------------------------------------------------------------------
class BareWorker:
    """The bare worker's process: started, read for finished items, CPU-measured, stopped."""

    def __init__(self, task_queue: str) -> None:
        self.task_queue = task_queue
        self.finished: dict[str, tuple[float, float]] = {}  # item id -> (latency ms, perf_counter)
        self.changed = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> BareWorker:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bare", "--worker", self.task_queue,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"the bare worker did not start: {line!r}")
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            parts = raw.decode().split()
            if len(parts) == 3 and parts[0] == PIPELINE_DONE:
                self.finished.setdefault(parts[1], (float(parts[2]), time.perf_counter()))
                self.changed.set()

    async def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not ids <= self.finished.keys():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"{len(ids - self.finished.keys())} bare items never finished")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))

    async def __aexit__(self, *_: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 30)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader:
            self._reader.cancel()


def cpu_now(worker: BareWorker) -> dict[str, float]:
    return {
        "temporal": component_cpu_seconds().get("temporal", 0.0),
        "worker": process_cpu_seconds(worker.pid),
        "driver": process_cpu_seconds(os.getpid()),
    }


async def main(seconds: float, concurrency: int) -> None:
    require_own_stack()
    settings = get_settings()
    client: Client = await clients.temporal_client(settings)
    task_queue = f"bare-{uuid.uuid4().hex[:8]}"
    prefix = uuid.uuid4().hex[:8]
    parties = search_attributes.parties(uuid.uuid4(), uuid.uuid4())

    async def book(i: int, kind: str) -> str:
        item = f"{prefix}-{kind}-{i}"
        request = {"id": item, "began": time.time()}
        start = WithStartWorkflowOperation(
            BareAppointment.run,
            request,
            id=f"bare-appointment-{item}",
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=search_attributes.parties(
                uuid.uuid4(), uuid.uuid4(), SearchAttributePair(STATUS, "PENDING")
            ),
        )
        await client.execute_update_with_start_workflow(
            BareAppointment.book, request, start_workflow_operation=start
        )
        return item

    async with BareWorker(task_queue) as worker:
        # Warm-up (first workflow runs import and cache what later ones reuse), not measured.
        warm = {await book(i, "warm") for i in range(5)}
        for item in warm:
            await client.start_workflow(
                BareBilling.run, {"id": item, "began": time.time()}, id=f"bare-billing-{item}",
                task_queue=task_queue, search_attributes=parties,
            )  # fmt: skip
        await worker.wait_for(warm, 60)

        before = cpu_now(worker)
        booking = await load("", lambda i: book(i, "booking"), concurrency=concurrency, seconds=seconds)
        booking_cpu = cpu_used(before, cpu_now(worker), booking.ok)
        booking.name = f"bare booking (concurrency {concurrency})"

        pipeline_ids: set[str] = set()

        async def pipeline_item(i: int) -> None:
            item = await book(i, "pipeline")
            await client.start_workflow(
                BareBilling.run,
                {"id": item, "began": time.time()},
                id=f"bare-billing-{item}",
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=parties,
            )
            pipeline_ids.add(item)

        before = cpu_now(worker)
        began = time.perf_counter()
        await load("", pipeline_item, concurrency=concurrency, seconds=seconds)
        await worker.wait_for(pipeline_ids, 300)
        pipeline_cpu = cpu_used(before, cpu_now(worker), len(pipeline_ids))
        done = [worker.finished[i] for i in pipeline_ids]
        span = max(t for _, t in done) - began
        pipeline = Run(f"bare booking → billing (concurrency {concurrency})", span, [ms for ms, _ in done])

    print(booking.line())
    print("    CPU ms per booking:", ", ".join(f"{k} {v:.1f}" for k, v in booking_cpu.items()),
          f"(total {sum(booking_cpu.values()):.1f})")  # fmt: skip
    print(pipeline.line().replace(" ok ", " issued "))
    print("    CPU ms per item:", ", ".join(f"{k} {v:.1f}" for k, v in pipeline_cpu.items()),
          f"(total {sum(pipeline_cpu.values()):.1f})")  # fmt: skip
    table.record("bare.booking.rate", booking.rate, "/s")
    table.record("bare.booking.p99", booking.pct(99), "ms")
    table.record("bare.pipeline.rate", pipeline.rate, "/s")
    table.record("bare.pipeline.p99", pipeline.pct(99), "ms")
    table.record_cpu("bare.booking.cpu", booking_cpu)
    table.record_cpu("bare.pipeline.cpu", pipeline_cpu)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--worker", metavar="TASK_QUEUE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(serve(args.worker))
    else:
        asyncio.run(main(args.seconds, args.concurrency))
