"""Waiting in tests: for a condition the test can observe, with a bound; never for a fixed time.

    row = await eventually(lambda: fetch_row(engine, id), timeout=30, what="the invoice row")

`probe` is called (and awaited, when it returns an awaitable) until it returns something truthy,
which is returned; after `timeout` seconds the test fails, naming `what` and the last value seen.
A probe may raise AssertionError to say "not yet" with a reason; the last one is reported. The
interval between probes is the only pause a test takes, so a test is as fast as the system under
it. The async form counts the event loop's time, so under looptime's fake time it costs nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float, interval: float = ..., what: str = ...
) -> T: ...
@overload
async def eventually(
    probe: Callable[[], T], *, timeout: float, interval: float = ..., what: str = ...
) -> T: ...
async def eventually(
    probe: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "the condition",
) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last: object
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            last = value
            if value:
                return value
        except AssertionError as not_yet:
            last = not_yet
        if loop.time() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s; last seen: {last!r}")
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "the condition"
) -> T:
    """The same for synchronous tests (subprocesses, a cluster's API)."""
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = probe()
            last = value
            if value:
                return value
        except AssertionError as not_yet:
            last = not_yet
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s; last seen: {last!r}")
        time.sleep(interval)
