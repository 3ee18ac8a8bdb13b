"""Waiting for the end of a long-running command: SIGINT/SIGTERM, or a condition of the command's own."""

from __future__ import annotations

import asyncio
import signal


async def until_signalled(*also: asyncio.Event) -> None:
    """Return on SIGINT or SIGTERM, or as soon as any of `also` is set (e.g. a replay that is done)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    waiters = [asyncio.create_task(event.wait()) for event in (stop, *also)]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
