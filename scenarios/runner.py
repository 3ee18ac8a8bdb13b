"""Running scenarios: a simulator per run, the client as a real process, the fault timeline, the checks.

Jepsen's parts, kept apart and joined by one recorded history: the *generator* is the scenario's user side
(played by the client from RTSIM_SCENARIO), the *nemesis* is the fault timeline (injected through the same
control plane as `rtsim fault`), the *client* is any program, and the *checkers* read the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rtsim.clients.common import utterance
from rtsim.simulator import control, tokens
from rtsim.simulator.faults import timing
from rtsim.simulator.protocol import RealtimeError
from rtsim.simulator.server import RealtimeServer, ServerConfig

from .checkers import RunView, Verdict, run_checks
from .network import NetworkLink
from .spec import CLIENT_STEPS, FaultStep, Scenario

# The built-in clients, as the commands that run them; any other program comes through --client-cmd.
CLIENTS: dict[str, list[str]] = {
    "reference": [sys.executable, "-m", "rtsim.clients.reference"],
    "naive": [sys.executable, "-m", "rtsim.clients.naive"],
    "openai-sdk": [sys.executable, "-m", "rtsim.clients.openai_sdk"],
    "reference-webrtc": [sys.executable, "-m", "rtsim.clients.reference_webrtc"],
    "naive-webrtc": [sys.executable, "-m", "rtsim.clients.naive_webrtc"],
    "browser": [sys.executable, "-m", "rtsim.clients.browser"],  # headless Chromium running a JS page
}
# Clients a `page-reload` step reaches (by SIGUSR1): the browser, and any program (its own contract).
RELOADABLE = frozenset({"browser", "custom"})
RELOAD_SIGNAL = signal.SIGUSR1
# Clients that say when their scenario clock starts (a browser takes seconds to launch): the harness waits
# for them to create RTSIM_READY_FILE, at most READY_TIMEOUT seconds, before the fault timeline starts.
SIGNALS_READY = frozenset({"browser"})
READY_TIMEOUT = 60.0
GRACE_SECONDS = 15.0  # beyond the scenario's duration, before a client that does not stop is killed
STARTUP_WAIT_SECONDS = 5.0  # the most a run holds its startup slot waiting for its client's first request


@dataclass(frozen=True)
class ClientSpec:
    name: str
    command: Sequence[str]
    ready_file: bool = False  # a program that creates RTSIM_READY_FILE when its scenario clock starts

    @classmethod
    def named(cls, name: str) -> ClientSpec:
        if name not in CLIENTS:
            raise ValueError(f"unknown client {name!r} (built-in: {', '.join(CLIENTS)}; or use --client-cmd)")
        return cls(name, CLIENTS[name])

    @classmethod
    def from_command(cls, command: str, *, ready_file: bool = False) -> ClientSpec:
        return cls("custom", shlex.split(command), ready_file=ready_file)

    @property
    def signals_ready(self) -> bool:
        """Whether the harness waits for this client's RTSIM_READY_FILE before the timeline starts."""
        return self.ready_file or self.name in SIGNALS_READY

    @property
    def has_page(self) -> bool:
        """Whether a `page-reload` step is delivered to this client (SIGUSR1) rather than skipped."""
        return self.name in RELOADABLE


@dataclass
class RunResult:
    scenario: Scenario
    client: ClientSpec
    verdicts: list[Verdict]
    exit_code: int | None
    seconds: float
    history_path: Path | None = None
    log_path: Path | None = None
    timed_out: bool = False
    faults: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the history, for the report

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.verdicts) and not self.timed_out

    @property
    def figures(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for verdict in self.verdicts:
            merged.update({k: v for k, v in verdict.figures.items() if v is not None})
        return merged


def run_key(scenario: Scenario, client: ClientSpec, seed: int) -> str:
    """An API key unique to the run, so its history is one client identity."""
    return f"sk-rtsim-{scenario.name}-{client.name}-{seed}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def voice_audio_turns(document: dict[str, Any], prefix: Path, seed: int) -> None:
    """Each audio turn's voice as a file beside the scenario (`audio_file`: raw pcm16 24 kHz mono, the
    trailing silence included), so a client in any language plays the same speech the Python clients make."""
    for index, turn in enumerate(document["turns"]):
        if turn.get("mode") == "audio":
            path = prefix.with_name(f"{prefix.name}.turn{index}.pcm")
            path.write_bytes(utterance(turn["say"], seed))
            turn["audio_file"] = str(path.resolve())


class EmbeddedSimulator:
    """A simulator of the run's own, in this process, configured from the scenario."""

    def __init__(
        self, scenario: Scenario, seed: int, script_path: Path, tls_ca_file: Path | None = None
    ) -> None:
        config = ServerConfig(
            profile=scenario.profile,
            seed=seed,
            script=str(script_path),
            tls=tls_ca_file is not None,
            tls_ca_file=str(tls_ca_file) if tls_ca_file is not None else None,
            **{k: v for k, v in scenario.server.items() if k != "seed"},
        )
        self.server = RealtimeServer(config)
        self.base_url = ""

    @property
    def client_env(self) -> dict[str, str]:
        """What the client needs beyond the base URL: over TLS, the variables that make it trust the CA."""
        return self.server.tls.client_env() if self.server.tls is not None else {}

    async def start(self) -> None:
        self.base_url = await self.server.start()

    async def inject(self, kind: str, params: dict[str, Any], key: str) -> str:
        assert self.server.control is not None
        return self.server.control.inject(kind, params, {"key": key}, None, route="scenario")["result"]

    def follow(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self.server.history.listeners.append(callback)
        return lambda: self.server.history.listeners.remove(callback)

    async def records(self, key: str) -> list[dict[str, Any]]:
        return self.server.history.records

    def note_fault(self, kind: str, params: dict[str, Any], key: str, *, route: str) -> None:
        """A fault the simulator did not inject itself (a network toxic), in the same record."""
        key_id = tokens.key_id(key)
        sessions = [c.session.id for c in self.server.live_carriers(key_id)]
        self.server.history.record(
            "fault",
            fault=kind,
            params=params,
            target={"key_id": key_id},
            route=route,
            applied_to=sessions,
            result="applied",
            key_id=key_id,
        )

    async def stop(self) -> None:
        await self.server.stop()


class RemoteSimulator:
    """A simulator someone else started (`--server URL`): faults and history through its control API.

    Its limits are whatever it was started with; the run's key keeps this run's records apart.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._tasks: list[asyncio.Task[None]] = []
        # An https simulator's CA is whatever this process trusts (SSL_CERT_FILE), which the client inherits.
        self.client_env: dict[str, str] = {}

    async def start(self) -> None:
        status, _ = await asyncio.to_thread(control.call, self.base_url, "GET", f"{control.PREFIX}/sessions")
        if status >= 400:
            raise RuntimeError(f"no rtsim control API at {self.base_url} (HTTP {status})")

    async def inject(self, kind: str, params: dict[str, Any], key: str) -> str:
        # The control API call blocks, so it runs off the event loop (the run's other timers keep time).
        status, body = await asyncio.to_thread(
            control.call,
            self.base_url,
            "POST",
            f"{control.PREFIX}/faults",
            {"kind": kind, "params": params, "target": {"key": key}},
        )
        if status >= 400:
            raise RealtimeError(body["error"]["message"] if isinstance(body, dict) else str(body))
        return str(body["result"])

    async def records(self, key: str) -> list[dict[str, Any]]:
        _status, text = await asyncio.to_thread(
            control.call, self.base_url, "GET", f"{control.PREFIX}/history", raw=True
        )
        every = [json.loads(line) for line in (text or "").splitlines() if line.strip()]
        key_id = tokens.key_id(key)
        sessions = {r["session"] for r in every if r["kind"] == "session" and r.get("key_id") == key_id}
        conns = {r["conn"] for r in every if r["kind"] == "handshake" and r.get("key_id") == key_id}
        return [
            r
            for r in every
            if r.get("key_id") == key_id or r.get("session") in sessions or r.get("conn") in conns
        ]

    def note_fault(self, kind: str, params: dict[str, Any], key: str, *, route: str) -> None:
        return None  # a remote simulator's history is its own; the run's log still says what was done

    def follow(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        async def poll() -> None:
            since = 0
            while True:
                _status, text = await asyncio.to_thread(
                    control.call,
                    self.base_url,
                    "GET",
                    f"{control.PREFIX}/history?kind=event&since={since}",
                    raw=True,
                )
                for line in (text or "").splitlines():
                    record = json.loads(line)
                    since = record["seq"] + 1
                    callback(record)
                await asyncio.sleep(0.1)

        task = asyncio.create_task(poll())
        return task.cancel

    async def stop(self) -> None:
        return None


async def run_one(
    scenario: Scenario,
    client: ClientSpec,
    *,
    seed: int = 0,
    out_dir: Path | None = None,
    server_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    tls: bool = False,
    startup: asyncio.Semaphore | None = None,
) -> RunResult:
    """One scenario against one client, on a simulator of its own (or the one at `server_url`); `tls`: the
    embedded simulator serves HTTPS/WSS from a local CA the client is told to trust.

    `startup`, shared between runs, limits how many clients are starting (spawned, not yet calling) at once.
    """
    out_dir = out_dir or Path("runs") / "adhoc"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{scenario.name}--{client.name}"
    script_path = out_dir / f"{stem}.script.yaml"
    script_path.write_text(yaml.safe_dump(scenario.model_script()))
    scenario_path = out_dir / f"{stem}.scenario.json"
    document = scenario.client_document()
    await asyncio.to_thread(voice_audio_turns, document, out_dir / stem, seed)
    scenario_path.write_text(json.dumps(document, indent=2))
    simulator: EmbeddedSimulator | RemoteSimulator = (
        RemoteSimulator(server_url)
        if server_url
        else EmbeddedSimulator(scenario, seed, script_path, out_dir / f"{stem}.ca.pem" if tls else None)
    )
    await simulator.start()
    key = run_key(scenario, client, seed)
    link = NetworkLink(f"rtsim-{stem}-{seed}", seed=seed) if scenario.needs_proxy else None
    log_path = out_dir / f"{stem}.client.log"
    ready_path = out_dir / f"{stem}.ready"
    ready_path.unlink(missing_ok=True)
    started = time.monotonic()
    timed_out = False
    exit_code: int | None = None
    try:
        client_url = await link.start(simulator.base_url) if link is not None else simulator.base_url
        env = {
            **os.environ,
            **simulator.client_env,
            **(extra_env or {}),
            "OPENAI_BASE_URL": client_url,
            "OPENAI_API_KEY": key,
            "RTSIM_SCENARIO": str(scenario_path),
            "RTSIM_SEED": str(seed),
            "RTSIM_READY_FILE": str(ready_path),
            "PYTHONUNBUFFERED": "1",
        }
        nemesis = Nemesis(simulator, key, scenario.faults, link)
        loop = asyncio.get_running_loop()
        with log_path.open("w") as log:
            async with startup or contextlib.nullcontext():
                process = await asyncio.create_subprocess_exec(
                    *client.command, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
                )
                nemesis.client = (client, process)
                if client.signals_ready:
                    # Its clock starts when it says so (it may have called the simulator while loading).
                    await wait_ready(ready_path, process)
                nemesis.start(loop, from_contact=not client.signals_ready)
                spawned = loop.time()
                # A client's start is the CPU-heavy part of a run (an interpreter and its imports): the next
                # one waits until this one has called the simulator, so starts do not pile up.
                while nemesis.contacted_at is None and process.returncode is None and nemesis.follows_contact:
                    if loop.time() - spawned > STARTUP_WAIT_SECONDS:
                        break
                    await asyncio.sleep(0.05)
            try:
                # The client's timeline runs from its first request (as the fault timeline does).
                while True:
                    deadline = (nemesis.contacted_at or spawned) + scenario.duration + GRACE_SECONDS
                    try:
                        exit_code = await asyncio.wait_for(process.wait(), max(0.0, deadline - loop.time()))
                        break
                    except TimeoutError:
                        if (nemesis.contacted_at or spawned) + scenario.duration + GRACE_SECONDS > deadline:
                            continue  # it called in the meantime: its timeline started later
                        timed_out = True
                        with contextlib.suppress(ProcessLookupError):  # it may exit just as it is killed
                            process.kill()
                        exit_code = await process.wait()
                        break
            finally:
                nemesis.stop()
        await nemesis.settle()
        await asyncio.sleep(0.3)  # let the server record the last closes
        records = await simulator.records(key)
    finally:
        if link is not None:
            await link.stop()
        await simulator.stop()
    # The run lasts the scenario's duration even when the client quits early: a client that gives up after a
    # drop has not "ended with the run", so the drop still needs a reconnect.
    last_t = records[-1]["t"] if records else 0.0
    view = RunView(
        records, user_turns=scenario.user, client_exit=exit_code, run_end_t=max(scenario.duration, last_t)
    )
    verdicts = run_checks(view, scenario.checks)
    if timed_out:
        verdicts.append(
            Verdict(
                "client_finished",
                False,
                f"the client was still running {scenario.duration + GRACE_SECONDS:g}s after it started "
                "and was killed",
            )
        )
    history_path = out_dir / f"{stem}.history.jsonl"
    history_path.write_text(
        "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
    )
    return RunResult(
        scenario,
        client,
        verdicts,
        exit_code,
        time.monotonic() - started,
        history_path,
        log_path,
        timed_out,
        nemesis.log,
        records,
    )


async def wait_ready(path: Path, process: asyncio.subprocess.Process, timeout: float = READY_TIMEOUT) -> None:
    """Until the client has created `path` (its scenario clock starts), exited, or `timeout` passed.

    A file, not a pipe or a signal: any program in any language can create one."""
    deadline = time.monotonic() + timeout

    def poll() -> None:
        while not path.exists() and process.returncode is None and time.monotonic() < deadline:
            time.sleep(0.02)

    await asyncio.to_thread(poll)


class Nemesis:
    """The fault timeline of one run: at fixed times, or a delay after the nth server event of a type.

    Event counts run over every server event the simulator records from the moment the timeline starts.
    Faults target every live session of the run's key, so they follow the client across reconnects; network
    toxics go on the run's proxy.
    """

    def __init__(
        self,
        simulator: EmbeddedSimulator | RemoteSimulator,
        key: str,
        steps: Sequence[FaultStep],
        link: NetworkLink | None = None,
    ) -> None:
        self.simulator = simulator
        self.key = key
        self.steps = steps
        self.link = link
        self.cancels: list[timing.Cancel] = []
        self.injections: set[asyncio.Task[None]] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # toxics in flight
        self.log: list[str] = []
        self.clock: timing.EventCounter | None = None
        self._unfollow: Callable[[], None] | None = None
        self._on_contact: list[FaultStep] = []  # fixed-time steps waiting for the client's first request
        self.client: tuple[ClientSpec, asyncio.subprocess.Process] | None = None  # for client steps
        self.contacted_at: float | None = None  # loop time of the client's first request
        self._from_contact = True

    @staticmethod
    def moment(step: FaultStep) -> timing.When:
        if step.at is not None:
            return timing.after(step.at)
        assert step.after_event is not None
        return timing.at_event(step.after_event, step.nth, delay=step.delay)

    def start(self, loop: asyncio.AbstractEventLoop, *, from_contact: bool = True) -> None:
        """Arm the steps; `from_contact`: fixed times count from the client's first request, else from now."""
        self.clock = timing.EventCounter(loop)
        self._from_contact = from_contact
        # A fixed time counts on the client's own timeline, as its user turns do: from its first request to
        # the simulator, not from the process spawn (which, on a loaded machine, can take seconds of imports).
        # Faults at 0 fire at once (before it connects); a remote simulator's records are polled too late
        # for this, so there the clock runs from the spawn.
        for step in self.steps:
            if self.follows_contact and step.at:
                self._on_contact.append(step)
            else:
                self.cancels.append(timing.arm(self.moment(step), self.clock, lambda s=step: self.fire(s)))
        if self.follows_contact or any(step.after_event is not None for step in self.steps):
            self._unfollow = self.simulator.follow(self._on_record)

    @property
    def follows_contact(self) -> bool:
        """The client's first request is seen as it happens (an embedded simulator's own history)."""
        return self._from_contact and isinstance(self.simulator, EmbeddedSimulator)

    def _on_record(self, record: dict[str, Any]) -> None:
        clock = self.clock
        if clock is None:
            return
        if record["kind"] == "event" and record["dir"] == "out":
            clock.saw(record["event"].get("type"))
        elif record["kind"] in ("http", "handshake") and self.contacted_at is None:
            self.contacted_at = clock.loop.time()
            steps, self._on_contact = self._on_contact, []
            for step in steps:
                self.cancels.append(timing.arm(self.moment(step), clock, lambda s=step: self.fire(s)))

    def fire(self, step: FaultStep) -> None:
        if step.kind in CLIENT_STEPS:
            self._client_step(step)
            return
        tasks, work = (
            (self.tasks, self._toxic(step)) if step.kind == "toxic" else (self.injections, self._inject(step))
        )
        task = asyncio.ensure_future(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _inject(self, step: FaultStep) -> None:
        try:
            result = await self.simulator.inject(step.kind, dict(step.params), self.key)
            self.log.append(f"{step.describe()}: {result}")
        except RealtimeError as exc:  # e.g. the client was between sessions at that moment
            self.log.append(f"{step.describe()}: skipped ({exc.message})")

    def _client_step(self, step: FaultStep) -> None:
        """A step the client acts out (the user reloading its page): a signal to the client process."""
        if self.client is None:
            return
        spec, process = self.client
        if not spec.has_page:
            self.log.append(f"{step.describe()}: skipped (the {spec.name} client has no page to reload)")
            return
        if process.returncode is not None:
            self.log.append(f"{step.describe()}: skipped (the client had exited)")
            return
        process.send_signal(RELOAD_SIGNAL)
        self.simulator.note_fault(step.kind, dict(step.params), self.key, route="scenario:client")
        self.log.append(f"{step.describe()}: SIGUSR1 sent to the {spec.name} client")

    async def _toxic(self, step: FaultStep) -> None:
        """Add a toxic on the link (and take it away after `duration`), recording both in the history."""
        assert self.link is not None
        params = dict(step.params)
        name = f"{params['type']}_{len(self.log)}"
        duration = params.pop("duration", None)
        toxic_type = params.pop("type")
        await self.link.add(toxic_type, name=name, **params)
        self.simulator.note_fault(f"toxic:{toxic_type}", params, self.key, route="scenario:toxiproxy")
        self.log.append(f"{step.describe()}: added on the {'real' if self.link.real else 'embedded'} proxy")
        if duration is not None:
            await asyncio.sleep(duration)
            await self.link.remove(name)
            self.simulator.note_fault(f"toxic:{toxic_type}:removed", {}, self.key, route="scenario:toxiproxy")

    async def settle(self) -> None:
        """Injections already under way finish (each is one short call); toxic steps still in flight when the
        client ended are abandoned (the proxy goes with the run)."""
        await asyncio.gather(*self.injections, return_exceptions=True)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def stop(self) -> None:
        for cancel in self.cancels:
            cancel()
        if self._unfollow is not None:
            self._unfollow()


DEFAULT_CLIENT = {"websocket": "reference", "webrtc": "reference-webrtc"}


def matrix_pairs(
    scenarios: Sequence[Scenario], clients: Sequence[ClientSpec]
) -> list[tuple[Scenario, ClientSpec]]:
    """The runs of a matrix, in order: every scenario per client, or each with its own client (`client:`, by
    default its transport's reference)."""
    if clients:
        return [(s, c) for c in clients for s in scenarios]
    return [(s, ClientSpec.named(s.client or DEFAULT_CLIENT[s.transport])) for s in scenarios]


async def run_matrix(
    scenarios: Sequence[Scenario],
    clients: Sequence[ClientSpec],
    *,
    seed: int = 0,
    jobs: int = 4,
    webrtc_jobs: int | None = None,
    out_dir: Path,
    server_url: str | None = None,
    tls: bool = False,
    progress: Callable[[str], None] | None = None,
    on_start: Callable[[Scenario, ClientSpec], None] | None = None,
    on_done: Callable[[RunResult, str], None] | None = None,
) -> list[RunResult]:
    """Every scenario against every client, `jobs` at a time (each run has its own simulator and port), at
    most `webrtc_jobs` WebRTC runs among them (default: two per core).

    With no clients named, each scenario runs against the reference client of its transport. `progress`
    gets a line per finished run; `on_start` and `on_done` (the result and that line) feed a live display.
    """
    # A WebRTC run encodes and decodes media on both sides the whole time (a quarter of a core or so); more at
    # once than two per core starves every run's timeline (three per core failed a timing bound on 2 cores).
    # WebSocket runs mostly wait, and fill the rest.
    media_slots = max(1, min(jobs, webrtc_jobs or 2 * (os.cpu_count() or 1)))
    startup = asyncio.Semaphore(os.cpu_count() or 1)  # clients starting at once: one per core
    pairs = matrix_pairs(scenarios, clients)
    done = 0

    async def one(scenario: Scenario, client: ClientSpec) -> RunResult:
        nonlocal done
        if on_start is not None:
            on_start(scenario, client)
        result = await run_one(
            scenario, client, seed=seed, out_dir=out_dir, server_url=server_url, tls=tls, startup=startup
        )
        done += 1
        status = "PASS" if result.passed else "FAIL"
        line = f"[{done}/{len(pairs)}] {scenario.name} × {client.name}: {status} ({result.seconds:.1f}s)"
        if progress is not None:
            progress(line)
        if on_done is not None:
            on_done(result, line)
        return result

    def is_webrtc(index: int) -> bool:
        return pairs[index][0].transport == "webrtc"

    # Longest first, so no long run starts last and finishes alone; and a free media slot goes to a WebRTC
    # run before anything else, since those slots are the scarce ones (left for the end, they run in series).
    pending = sorted(range(len(pairs)), key=lambda i: -pairs[i][0].duration)
    running: dict[asyncio.Task[RunResult], int] = {}
    results: dict[int, RunResult] = {}
    try:
        while pending or running:
            while len(running) < jobs and pending:
                media_free = sum(map(is_webrtc, running.values())) < media_slots
                pick = next((i for i in pending if is_webrtc(i) == media_free), None)
                if pick is None and not media_free:
                    break  # only WebRTC runs are left, and their slots are taken
                pick = pending[0] if pick is None else pick
                pending.remove(pick)
                running[asyncio.ensure_future(one(*pairs[pick]))] = pick
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                results[running.pop(task)] = task.result()
    finally:
        for task in running:
            task.cancel()
    return [results[i] for i in range(len(pairs))]
