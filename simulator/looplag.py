"""Event-loop lag: how late a small periodic task wakes up, i.e. how long something held the loop.

Every session shares one event loop, so a step that computes for 200 ms stalls every other client for
200 ms. The monitor sleeps `interval` seconds at a time and measures how much later than asked it woke;
`max_lag` is the longest stall seen since it started (or since `reset`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

DEFAULT_INTERVAL = 0.01


class LoopLagMonitor:
    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rtsim-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reset(self) -> float:
        """The longest lag so far; start counting afresh."""
        worst, self.max_lag = self.max_lag, 0.0
        return worst

    async def _run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = time.perf_counter() - asked - self.interval
            self.samples += 1
            if lag > self.max_lag:
                self.max_lag = lag

    @property
    def max_lag_ms(self) -> float:
        return round(self.max_lag * 1000, 1)
