"""rtsim inside a user's own pytest suite: fixtures over the public `rtsim.SyncSimulator` and `run_one`.

Registered through the `pytest11` entry point, so it is there wherever rtsim is installed, and inert until a
test asks for a fixture: importing this module loads neither the server nor aiohttp.

    def test_reconnects(rtsim):                       # a running simulator, per test by default
        app = subprocess.Popen([...], env=rtsim.env)
        rtsim.wait_for("response.done")
        rtsim.inject("drop")
        rtsim.assert_checks("reconnected_within")     # the scenario checkers, over this history

    @pytest.mark.rtsim_scenarios("drop-mid-response", "close-1011")
    def test_survives(rtsim_scenario):
        rtsim_scenario(client=[sys.executable, "app.py"]).assert_passed()

Options: `--rtsim-scope function|module|session` (ini `rtsim_scope`), `--rtsim-record DIR` (ini
`rtsim_record`: every simulator's history and every scenario run's files go there), `--rtsim-seed N`.

For a failing test the plugin adds a report section "rtsim" with each failing checker's reason and the
records that show it, and keeps the test's runs on the item (`item.stash[RUNS]`, a list of `PluginRun`);
the `pytest_rtsim_failed(item, report, runs)` hook is called with them, for reports of one's own. It also
writes the HTML report `rtsim run` writes (`report.html`, with the timeline) for that test, under
`--rtsim-record DIR/<test id>/` or else `runs/pytest/<test id>/`, and names it in the section.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rtsim.scenarios.checkers import Verdict
    from rtsim.scenarios.runner import RunResult
    from rtsim.scenarios.spec import Scenario
    from rtsim.simulator.api import SyncSimulator

SCOPES = ("function", "module", "session")
EVIDENCE_SHOWN = 6  # records per failing checker in a report section or an assertion message


@dataclass
class PluginRun:
    """One simulator's or one scenario run's part in a test: what a report of the failure needs."""

    label: str
    records: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    result: RunResult | None = None  # set for `rtsim_scenario` runs
    source: Callable[[], list[dict[str, Any]]] | None = None  # a simulator still running: its live record

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]


RUNS = pytest.StashKey[list[PluginRun]]()


def explain(label: str, verdicts: Sequence[Verdict]) -> str:
    """The failing checkers' reasons, each with the records that show it."""
    lines = [f"{label}:"]
    for verdict in verdicts:
        if verdict.ok:
            continue
        lines.append(f"  {verdict.name}: {verdict.reason}")
        lines += [f"      {json.dumps(r, default=str)}" for r in verdict.evidence[:EVIDENCE_SHOWN]]
    return "\n".join(lines)


# ---- options, markers, hooks --------------------------------------------------------------------------


class RtsimHooks:
    @pytest.hookspec(firstresult=False)
    def pytest_rtsim_failed(
        self, item: pytest.Item, report: pytest.TestReport, runs: list[PluginRun]
    ) -> None:
        """A test that used rtsim failed; `runs` are its simulators and scenario runs (records, verdicts)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(RtsimHooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rtsim", "rtsim realtime API simulator")
    group.addoption(
        "--rtsim-scope",
        choices=SCOPES,
        default=None,
        help="how long one `rtsim` simulator lives: a test (default), a module or the session",
    )
    group.addoption(
        "--rtsim-record", metavar="DIR", default=None, help="write every simulator's history here"
    )
    group.addoption("--rtsim-seed", metavar="N", type=int, default=None, help="seed for simulators and runs")
    parser.addini("rtsim_scope", "default for --rtsim-scope", default="function")
    parser.addini("rtsim_record", "default for --rtsim-record", default="")
    parser.addini("rtsim_seed", "default for --rtsim-seed", default="0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rtsim(**options): the `rtsim` simulator's options (ServerConfig fields, e.g. max_session=3)",
    )
    config.addinivalue_line(
        "markers",
        "rtsim_scenarios(*names): run the test once per built-in scenario (all when none is named); "
        "the `rtsim_scenario` fixture then runs that scenario",
    )


def scope_of(config: pytest.Config) -> str:
    scope = config.getoption("--rtsim-scope") or config.getini("rtsim_scope") or "function"
    if scope not in SCOPES:
        raise pytest.UsageError(f"rtsim_scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return str(scope)


def seed_of(config: pytest.Config) -> int:
    seed = config.getoption("--rtsim-seed")
    return int(seed if seed is not None else config.getini("rtsim_seed") or 0)


def record_dir_of(config: pytest.Config) -> Path | None:
    raw = config.getoption("--rtsim-record") or config.getini("rtsim_record")
    return Path(raw) if raw else None


def file_stem(nodeid: str) -> str:
    """A test id as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150] or "session"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("rtsim_scenarios")
    if marker is None:
        return
    if "rtsim_scenario" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: rtsim_scenarios needs the rtsim_scenario fixture"
        )
    names = list(marker.args) or builtin_scenario_names()
    metafunc.parametrize("rtsim_scenario", names, indirect=True, ids=names)


def builtin_scenario_names(transport: str = "websocket") -> list[str]:
    from rtsim.scenarios.spec import discover

    return [s.name for s in discover([]) if s.transport == transport]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    runs = item.stash.get(RUNS, [])
    if not runs or report.when != "call" or not report.failed:
        return
    for run in runs:
        if run.source is not None:  # a simulator still running: what it has recorded up to the failure
            run.records = run.source()
    html_path = write_failure_report(item, runs)
    report.sections.append(("rtsim", describe_runs(runs) + f"\nHTML report: {html_path}"))
    item.config.hook.pytest_rtsim_failed(item=item, report=report, runs=runs)


def report_dir_of(item: pytest.Item) -> Path:
    """Where a failing test's HTML report goes: under --rtsim-record DIR, else runs/pytest/ in the rootdir."""
    base = record_dir_of(item.config) or Path(item.config.rootpath) / "runs" / "pytest"
    return base / file_stem(item.nodeid)


def write_failure_report(item: pytest.Item, runs: Sequence[PluginRun]) -> Path:
    """The same HTML report `rtsim run` writes (timeline, reasons), for the runs of one failing test. A
    simulator the test drove itself has no scenario: it appears as a run named after the test."""
    from rtsim.scenarios.report import write_report
    from rtsim.scenarios.runner import ClientSpec, RunResult
    from rtsim.scenarios.spec import Scenario

    results = []
    for run in runs:
        if run.result is not None:
            results.append(run.result)
            continue
        times = [r["t"] for r in run.records if "t" in r]
        results.append(
            RunResult(
                Scenario(name=run.label, description=f"the simulator of {item.nodeid}"),
                ClientSpec("test", []),
                list(run.verdicts),
                None,
                max(times) - min(times) if times else 0.0,
                records=list(run.records),
            )
        )
    return write_report(results, report_dir_of(item) / "report.html", title=f"rtsim: {item.nodeid}")


def describe_runs(runs: Sequence[PluginRun]) -> str:
    parts = []
    for run in runs:
        if run.failures:
            parts.append(explain(run.label, run.failures))
        else:
            parts.append(f"{run.label}: no checker failed; its last records:")
        if run.result is not None and run.result.history_path is not None:
            parts.append(f"  history: {run.result.history_path}")
        if not run.failures:
            notable = [r for r in run.records if r.get("kind") in ("session", "close", "fault", "handshake")]
            parts += [f"      {json.dumps(brief(r), default=str)}" for r in notable[-EVIDENCE_SHOWN * 2 :]]
    return "\n".join(parts)


def brief(record: dict[str, Any]) -> dict[str, Any]:
    from rtsim.scenarios.checkers import _brief

    return _brief(record)


# ---- the `rtsim` fixture --------------------------------------------------------------------------------


def _make_simulator_class() -> type[SyncSimulator]:
    from rtsim.simulator.api import SyncSimulator

    class PluginSimulator(SyncSimulator):
        """`rtsim.SyncSimulator` plus the scenario checkers over its own history."""

        def __init__(self, label: str, **options: Any) -> None:
            super().__init__(**options)
            self.label = label  # names its history file under --rtsim-record
            self.run = self.begin(label)

        def begin(self, test_id: str) -> PluginRun:
            """A test starts using this simulator: its checks are reported with that test only."""
            self.run = PluginRun(test_id, source=lambda: list(self.history.records))
            return self.run

        def check(
            self, *checks: str | tuple[str, dict[str, Any]], key_id: str | None = None
        ) -> list[Verdict]:
            """Run checkers (a name, or `(name, params)`) over the history of one client identity
            (by default the key `env` hands out)."""
            from rtsim.scenarios.checkers import RunView, run_checks
            from rtsim.scenarios.spec import Check

            wanted = key_id or self.key_id
            records = [r for r in self.history.records if belongs_to(r, wanted, self.history.records)]
            parsed = [Check(c, {}) if isinstance(c, str) else Check(c[0], dict(c[1])) for c in checks]
            # While the simulator runs the run has not ended, so no close counts as "ended with the run";
            # after stop, the last record is the end.
            end = float("inf") if self.running else None
            verdicts = run_checks(RunView(records, run_end_t=end), parsed)
            self.run.verdicts.extend(verdicts)
            return verdicts

        def assert_checks(self, *checks: str | tuple[str, dict[str, Any]], key_id: str | None = None) -> None:
            verdicts = self.check(*checks, key_id=key_id)
            if not all(v.ok for v in verdicts):
                raise AssertionError(explain(f"rtsim checks on {self.base_url}", verdicts))

    return PluginSimulator


def belongs_to(record: dict[str, Any], key_id: str, every: list[dict[str, Any]]) -> bool:
    if record.get("key_id") == key_id:
        return True
    sessions = {r["session"] for r in every if r.get("kind") == "session" and r.get("key_id") == key_id}
    return record.get("session") in sessions


def marker_options(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    marker = node.get_closest_marker("rtsim")
    return dict(marker.kwargs) if marker is not None else {}


@dataclass
class SimulatorLease:
    simulator: Any
    options: dict[str, Any]


def start_simulator(config: pytest.Config, label: str, options: dict[str, Any]) -> Any:
    cls = _make_simulator_class()
    options = {"seed": seed_of(config), **options}
    return cls(label, **options).start()


def stop_simulator(config: pytest.Config, simulator: Any) -> None:
    simulator.stop()
    simulator.run.records = list(simulator.history.records)
    record_dir = record_dir_of(config)
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
        path = record_dir / f"{file_stem(simulator.label)}.history.jsonl"
        path.write_text(simulator.history.to_jsonl())


def _shared_scope(fixture_name: str, config: pytest.Config) -> str:
    return scope_of(config)


@pytest.fixture(scope=_shared_scope)  # type: ignore[arg-type]
def _rtsim_shared(request: pytest.FixtureRequest) -> Iterator[SimulatorLease]:
    """The simulator tests share under `--rtsim-scope module|session` (options: the module's marker)."""
    options = marker_options(request.node) if scope_of(request.config) == "module" else {}
    label = request.node.nodeid or "session"
    simulator = start_simulator(request.config, label, options)
    try:
        yield SimulatorLease(simulator, options)
    finally:
        stop_simulator(request.config, simulator)


@pytest.fixture
def rtsim(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A running simulator (`rtsim.SyncSimulator`): `base_url`, `env`, `inject`, `history`, `wait_for`,
    `sessions`, plus `check`/`assert_checks`. Options come from `@pytest.mark.rtsim(...)`; a test whose
    options differ from the shared simulator's gets one of its own."""
    options = marker_options(request.node)
    runs = request.node.stash.setdefault(RUNS, [])
    if scope_of(request.config) != "function":
        lease: SimulatorLease = request.getfixturevalue("_rtsim_shared")
        if options in ({}, lease.options):
            runs.append(lease.simulator.begin(request.node.nodeid))
            yield lease.simulator
            return
    simulator = start_simulator(request.config, request.node.nodeid, options)
    runs.append(simulator.run)
    try:
        yield simulator
    finally:
        stop_simulator(request.config, simulator)


# ---- the `rtsim_scenario` fixture -----------------------------------------------------------------------


class ScenarioOutcome:
    """A scenario run's verdict: `passed`, the checkers' `verdicts`, `failures`, `records`, `explain()`."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.verdicts = result.verdicts
        self.run = PluginRun(f"{result.scenario.name} × {result.client.name}", verdicts=list(result.verdicts))
        self.run.result = result
        self.run.records = self.records

    @property
    def passed(self) -> bool:
        return self.result.passed

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    @property
    def reasons(self) -> dict[str, str]:
        return {v.name: v.reason for v in self.failures}

    @property
    def records(self) -> list[dict[str, Any]]:
        path = self.result.history_path
        if path is None or not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def log(self) -> str:
        path = self.result.log_path
        return path.read_text() if path is not None and path.exists() else ""

    def explain(self) -> str:
        text = explain(f"scenario {self.run.label} failed", self.verdicts)
        if self.result.faults:
            text += "\n  faults: " + "; ".join(self.result.faults)
        return text + f"\n  history: {self.result.history_path}"

    def assert_passed(self) -> None:
        if not self.passed:
            raise AssertionError(self.explain())

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"<ScenarioOutcome {self.run.label}: {'PASS' if self.passed else 'FAIL'}>"


ClientArg = str | Sequence[str]


class ScenarioRunner:
    """`rtsim_scenario(scenario, client)`: one run through `rtsim.scenarios.runner.run_one`.

    `scenario` is a built-in name, a YAML file or a `Scenario` (default: the one `rtsim_scenarios` chose);
    `client` is a built-in client name, a command line, or an argv list.
    """

    def __init__(self, request: pytest.FixtureRequest, name: str | None) -> None:
        self.request = request
        self.name = name
        self.runs = request.node.stash.setdefault(RUNS, [])
        record_dir = record_dir_of(request.config)
        self.out_dir = (
            record_dir / file_stem(request.node.nodeid)
            if record_dir is not None
            else request.getfixturevalue("tmp_path") / "rtsim"
        )

    def __call__(
        self,
        scenario: str | Path | Scenario | None = None,
        client: ClientArg = "reference",
        *,
        seed: int | None = None,
        env: dict[str, str] | None = None,
    ) -> ScenarioOutcome:
        from rtsim.scenarios.runner import run_one

        spec = self.scenario(scenario)
        result = run_blocking(
            run_one(
                spec,
                self.client(client),
                seed=seed_of(self.request.config) if seed is None else seed,
                out_dir=self.out_dir,
                extra_env=env,
            )
        )
        outcome = ScenarioOutcome(result)
        self.runs.append(outcome.run)
        return outcome

    def scenario(self, scenario: str | Path | Scenario | None) -> Scenario:
        from rtsim.scenarios.spec import Scenario, discover

        scenario = scenario if scenario is not None else self.name
        if scenario is None:
            raise TypeError("name a scenario, or parametrize the test with @pytest.mark.rtsim_scenarios(...)")
        if isinstance(scenario, Scenario):
            return scenario
        found = discover([str(scenario)])
        if len(found) != 1:
            raise ValueError(f"{scenario!r} names {len(found)} scenarios; name one")
        return found[0]

    @staticmethod
    def client(client: ClientArg) -> Any:
        from rtsim.scenarios.runner import CLIENTS, ClientSpec

        if isinstance(client, str):
            return (
                ClientSpec.named(client) if client in CLIENTS else ClientSpec("custom", shlex.split(client))
            )
        return ClientSpec("custom", list(client))


def run_blocking(coroutine: Any) -> Any:
    """Run a coroutine to the end on a loop of its own, from a sync or an async test alike."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="rtsim-scenario", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def rtsim_scenario(request: pytest.FixtureRequest) -> ScenarioRunner:
    """Run a scenario against a client and get its verdict: `rtsim_scenario("close-1011", client=...)`."""
    return ScenarioRunner(request, getattr(request, "param", None))
