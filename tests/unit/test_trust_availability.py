"""Availability guards in one process: the bounded hash queue and the cached, bounded readiness."""

from __future__ import annotations

import asyncio
import threading

import pytest

from healthcare import errors, security
from healthcare.probes import Readiness
from tests.waiting import eventually


async def test_the_hash_queue_refuses_beyond_its_limit() -> None:
    queue = security.HashQueue(workers=1)
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "done"

    running = [asyncio.create_task(queue.run(slow, limit=2)) for _ in range(2)]
    await asyncio.sleep(0)
    assert queue.pending == 2
    with pytest.raises(errors.DependencyUnavailable) as full:
        await queue.run(slow, limit=2)
    assert full.value.retry_after_seconds >= 1
    release.set()
    assert await asyncio.gather(*running) == ["done", "done"]
    assert queue.pending == 0
    assert await queue.run(lambda: "again", limit=2) == "again"


async def test_password_checks_take_the_limit() -> None:
    stored = security.hash_password("correct-horse", rounds=10)
    assert await security.verify_password_async("correct-horse", stored, rounds=10, queue_limit=4)
    assert security.HASH_QUEUE.pending == 0


async def test_readiness_runs_one_round_for_many_callers_and_caches_it() -> None:
    calls = {"db": 0, "blocking": 0}

    async def db() -> None:
        calls["db"] += 1
        await asyncio.sleep(0.05)

    def blocking() -> None:
        calls["blocking"] += 1

    readiness = Readiness(asynchronous={"db": db}, threaded={"blocking": blocking}, timeout=1, ttl=60)
    try:
        answers = await asyncio.gather(*(readiness.check() for _ in range(50)))
        assert calls == {"db": 1, "blocking": 1}
        assert all(results == answers[0][0] for results, _ in answers)
        assert [r.name for r in answers[0][0]] == ["db", "blocking"] and all(r.ok for r in answers[0][0])
        await readiness.check()
        assert readiness.rounds == 1
    finally:
        readiness.close()


async def test_a_hanging_check_holds_one_thread_and_is_not_started_again() -> None:
    stuck = threading.Event()
    entered: list[int] = []

    def hangs() -> None:
        entered.append(threading.get_native_id())
        stuck.wait(10)

    readiness = Readiness(asynchronous={}, threaded={"lambda": hangs}, timeout=0.1, ttl=0)
    try:
        first, _ = await readiness.check()
        assert not first[0].ok and "no answer within" in first[0].detail
        for _ in range(5):  # rounds keep coming; the stuck check is not started beside itself
            results, _ = await readiness.check()
            assert not results[0].ok and results[0].detail == "RuntimeError"
        assert len(entered) == 1
        stuck.set()  # it answers at last: the next round checks again

        async def ok_again() -> bool:
            return bool((await readiness.check())[0][0].ok)

        await eventually(ok_again, timeout=5, interval=0.01, what="a passing round after the stuck check")
        assert len(entered) >= 2
    finally:
        stuck.set()
        readiness.close()
