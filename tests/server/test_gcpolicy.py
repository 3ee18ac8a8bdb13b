"""The quiet garbage-collection policy of a server process (simulator/gcpolicy.py)."""

from __future__ import annotations

import asyncio
import gc

from rtsim.simulator.gcpolicy import DEFERRED_FULL_THRESHOLD, QuietCollector


async def test_full_collections_wait_for_quiet_and_never_for_longer_than_the_cap() -> None:
    quiet, work = [False], [0]
    before = gc.get_threshold()
    collector = QuietCollector(lambda: quiet[0], lambda: work[0], check_interval=0.01, max_interval=3600)
    collector.start()
    try:
        assert gc.get_threshold()[2] == DEFERRED_FULL_THRESHOLD
        assert gc.get_freeze_count() > 0  # what existed at start is out of the collector's sight
        work[0] += 10  # busy: records added, a response in progress
        await asyncio.sleep(0.1)
        assert collector.collections == 0
        quiet[0] = True  # the responses ended
        await asyncio.sleep(0.1)
        assert collector.collections == 1  # once: nothing happened since
        now = asyncio.get_running_loop().time()
        quiet[0] = False
        collector.max_interval = 0.0  # under constant load the cap still collects
        assert collector.due(now)
    finally:
        await collector.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
