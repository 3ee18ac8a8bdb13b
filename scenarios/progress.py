"""Live progress of `rtsim run` on a terminal: a bar with the runs done, the ones under way and an ETA.

Each scenario states how long it lasts, so the ETA is a schedule rather than a guess from the pace so far:
the runs under way finish their expected time, the queued ones fill the free slots (`--jobs`), and the
expected times are scaled by how much longer than stated the finished runs actually took.
"""

from __future__ import annotations

import heapq
import os
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from .runner import ClientSpec, RunResult
from .spec import Scenario

# What a run costs beyond its scenario's duration: a simulator to start, a client process to launch.
RUN_OVERHEAD_S = 1.0


def live_wanted(stream: IO[str] | None = None) -> bool:
    """A live display only on an interactive terminal; CI logs and pipes get plain lines."""
    stream = stream or sys.stdout
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def _label(scenario: Scenario, client: ClientSpec) -> str:
    return f"{scenario.name} × {client.name}"


class Schedule:
    """Expected finish of the matrix, from the scenarios' durations and the runs finished so far."""

    def __init__(self, pairs: Sequence[tuple[Scenario, ClientSpec]], jobs: int) -> None:
        self.jobs = max(jobs, 1)
        self.queued = {_label(s, c): s.duration + RUN_OVERHEAD_S for s, c in pairs}
        self.running: dict[str, tuple[float, float]] = {}  # label → (started, expected seconds)
        self.stated = 0.0  # expected seconds of the finished runs ...
        self.took = 0.0  # ... and what they really took

    def started(self, label: str, now: float) -> None:
        self.running[label] = (now, self.queued.pop(label, RUN_OVERHEAD_S))

    def finished(self, label: str, seconds: float) -> None:
        _, expected = self.running.pop(label, (0.0, seconds))
        self.stated += expected
        self.took += seconds

    def remaining(self, now: float) -> float:
        pace = self.took / self.stated if self.stated else 1.0
        slots = [max(0.0, expected * pace - (now - began)) for began, expected in self.running.values()]
        slots += [0.0] * (self.jobs - len(slots))
        heapq.heapify(slots)
        for expected in self.queued.values():
            heapq.heappush(slots, heapq.heappop(slots) + expected * pace)
        return max(slots, default=0.0)


class EtaColumn(ProgressColumn):
    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule

    def render(self, task: Any) -> Text:
        if task.finished:
            return Text("done", style="progress.remaining")
        seconds = round(self.schedule.remaining(time.monotonic()))
        return Text(f"ETA {seconds // 60}:{seconds % 60:02d}", style="progress.remaining")


class LiveProgress:
    """The terminal display: finished runs scroll above a bar that says what is running and what is left."""

    def __init__(
        self, pairs: Sequence[tuple[Scenario, ClientSpec]], jobs: int, console: Console | None = None
    ) -> None:
        self.schedule = Schedule(pairs, jobs)
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]rtsim run"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            EtaColumn(self.schedule),
            TextColumn("[dim]{task.description}"),
            console=self.console,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task("", total=len(pairs), failed="")
        self.failures = 0

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _describe(self) -> None:
        running = list(self.schedule.running)
        shown = ", ".join(running[:3]) + (f" +{len(running) - 3}" if len(running) > 3 else "")
        self.progress.update(self.task, description=f"running {shown}" if running else "")

    def started(self, scenario: Scenario, client: ClientSpec) -> None:
        self.schedule.started(_label(scenario, client), time.monotonic())
        self._describe()

    def finished(self, result: RunResult, line: str) -> None:
        self.schedule.finished(_label(result.scenario, result.client), result.seconds)
        self.failures += not result.passed
        style = "green" if result.passed else "bold red"
        self.console.print(Text("  " + line, style=style))
        failed = f"[red]{self.failures} failed[/]" if self.failures else ""
        self.progress.update(self.task, advance=1, failed=failed)
        self._describe()
