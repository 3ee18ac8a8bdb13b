"""`rtsim soak` in miniature: sessions under random session faults leave nothing behind."""

from __future__ import annotations

from rtsim.simulator.soak import soak


def test_a_short_soak_leaves_nothing_behind() -> None:
    report = soak(6, 0.06, seed=3, pacing=0.0)
    assert report.sessions >= 6
    assert sum(report.faults.values()) >= 3 and len(report.faults) >= 2
    assert (report.leaked_sessions, report.leaked_tasks) == (0, 0)
    assert report.leaked_fds <= 2
    assert report.server_exceptions == []
    assert 0 <= report.max_loop_lag_ms < 1000
    assert report.clean
