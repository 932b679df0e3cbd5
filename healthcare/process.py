"""Entry point shared by the long-running roles: settings, logging, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable

import uvloop

from healthcare import metrics, tracing
from healthcare.logging import configure_logging
from healthcare.settings import Settings, get_settings


def tune_gc() -> None:
    """Call once startup is done. Everything allocated so far (modules, clients, the app) moves to
    a permanent generation the collector no longer scans, and young collections run less often:
    full scans of a large heap were the slowest requests' pauses."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def run_until_stopped(
    role: Callable[[Settings, asyncio.Event], Awaitable[None]], *, name: str | None = None
) -> None:
    """Run `role(settings, stop)`; `stop` is set by SIGTERM or SIGINT so the role can drain and exit.
    `name` is the role's traces' service (`healthcare-<name>`), when tracing is on."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    metrics.serve(settings)
    if name is not None:
        tracing.configure(settings, name)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.call_later(5, tune_gc)  # after the role's clients have connected
        await role(settings, stop)

    # uvloop, as the API already runs on (uvicorn picks it): a cheaper event loop for asyncpg,
    # aiokafka and the Temporal SDK's callbacks.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run())
