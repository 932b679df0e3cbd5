"""Entry point shared by the long-running roles: settings, logging, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from healthcare.logging import configure_logging
from healthcare.settings import Settings, get_settings


def run_until_stopped(role: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Run `role(settings, stop)`; `stop` is set by SIGTERM or SIGINT so the role can drain and exit."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await role(settings, stop)

    asyncio.run(_run())
