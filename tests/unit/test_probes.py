"""Readiness probes: a failing or hanging dependency is named, never raised."""

import asyncio

from healthcare.probes import run_probes


async def test_run_probes_names_failures_and_timeouts() -> None:
    async def ok() -> None:
        return None

    async def broken() -> None:
        raise ConnectionRefusedError("refused")

    async def hangs() -> None:
        await asyncio.sleep(10)

    results = await run_probes({"a": ok, "b": broken, "c": hangs}, timeout=0.2)
    by_name = {r.name: r for r in results}
    assert by_name["a"].ok and by_name["a"].detail == "ok"
    assert not by_name["b"].ok and by_name["b"].detail == "ConnectionRefusedError"
    assert not by_name["c"].ok and "no answer within 0.2s" in by_name["c"].detail
