"""The worker's memory settings: the sticky cache size reaches the SDK's Worker, and the periodic
full collection frees what Python's own schedule leaves in the oldest generation for minutes (the
cycles of workflow runs evicted from the cache)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from prometheus_client import REGISTRY

from healthcare.settings import Settings
from workers.temporal_worker import collect_garbage, worker_options

PAUSES = "healthcare_worker_gc_pause_seconds_count"


class _Run:
    """Stands for an evicted run: an object in a reference cycle, as a sandboxed module and its
    workflow instance are."""

    def __init__(self) -> None:
        self.me: Any = self


def _old_garbage() -> weakref.ref[_Run]:
    """A cycle that survived a collection (so it sits in the oldest generation), then dropped."""
    run = _Run()
    gc.collect()
    return weakref.ref(run)


def test_the_cache_size_is_a_setting() -> None:
    assert worker_options(Settings(worker_max_cached_workflows=64))["max_cached_workflows"] == 64
    assert Settings().worker_max_cached_workflows == 256


@pytest.mark.asyncio(loop_scope="function")
async def test_the_worker_collects_old_cycles_on_its_interval() -> None:
    before = REGISTRY.get_sample_value(PAUSES) or 0.0
    dead = _old_garbage()
    gc.collect(1)  # the young generations' collections, which Python runs often, leave it
    assert dead() is not None
    stop = asyncio.Event()
    task = asyncio.create_task(collect_garbage(stop, interval=0.05))
    for _ in range(100):
        if dead() is None:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert dead() is None
    assert (REGISTRY.get_sample_value(PAUSES) or 0.0) > before


@pytest.mark.asyncio(loop_scope="function")
async def test_an_interval_of_zero_leaves_collection_to_python() -> None:
    stop = asyncio.Event()
    # Returns at once, without waiting for the stop and without collecting.
    await asyncio.wait_for(collect_garbage(stop, interval=0), 1)
    dead = _old_garbage()
    await asyncio.sleep(0.2)
    assert dead() is not None
    gc.collect()
    assert dead() is None
