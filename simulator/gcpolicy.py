"""When a server process collects its garbage: full collections while it is quiet, not mid-audio.

CPython's full (oldest-generation) collection walks every tracked object, and a loaded simulator holds
hundreds of thousands of them (the in-memory history alone is up to 200 000 records): one full
collection stalled the loop for 60-225 ms under load, late for every session at once (measured with
`gc.callbacks` at 200 sessions; that is what a p99 lateness bound sees). The policy, for a server
process (`rtsim serve`), not for a program that embeds the simulator:

- what exists once the server has started (modules, the app) is moved out of the collector's sight
  (`gc.freeze`): it lives as long as the process anyway;
- automatic full collections are pushed far out (the third threshold); the young generations are
  collected as before, so short-lived cycles go as they always did;
- a full collection runs when no response is being delivered on any session (checked every
  `check_interval` s, and only if records were added since the last one), and in any case after
  `max_interval` s, so garbage cycles of ended sessions are reclaimed under constant load too.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

CHECK_INTERVAL = 1.0
MAX_INTERVAL = 120.0
DEFERRED_FULL_THRESHOLD = 1_000_000  # gen-1 collections before CPython would start a full one itself


class QuietCollector:
    def __init__(
        self,
        is_quiet: Callable[[], bool],
        activity: Callable[[], int],
        *,
        check_interval: float = CHECK_INTERVAL,
        max_interval: float = MAX_INTERVAL,
    ) -> None:
        self.is_quiet = is_quiet  # no response in progress anywhere
        self.activity = activity  # a count that grows with work done (the history's record count)
        self.check_interval = check_interval
        self.max_interval = max_interval
        self.collections = 0
        self.max_pause_ms = 0.0
        self._thresholds: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_full = time.monotonic()
        self._activity_at_last = 0

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        self._thresholds = gc.get_threshold()
        low, middle, _ = self._thresholds
        gc.set_threshold(low, middle, DEFERRED_FULL_THRESHOLD)
        self._last_full = time.monotonic()
        self._activity_at_last = self.activity()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rtsim-quiet-gc")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        gc.unfreeze()

    def due(self, now: float) -> bool:
        if now - self._last_full >= self.max_interval:
            return True
        return self.activity() != self._activity_at_last and self.is_quiet()

    def collect(self) -> None:
        started = time.perf_counter()
        gc.collect()
        self.max_pause_ms = max(self.max_pause_ms, (time.perf_counter() - started) * 1000)
        self.collections += 1
        self._last_full = time.monotonic()
        self._activity_at_last = self.activity()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            if self.due(time.monotonic()):
                self.collect()
