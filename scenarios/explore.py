"""`rtsim explore`: property-based chaos. Hypothesis generates fault schedules and user behaviour, a scenario
run is the test function, and a failing checker is shrunk (by hypothesis's own shrinker) to a minimal
schedule, written as a scenario file with the checker's reason.

The strategies are values, so other tests can use them:

- `fault_steps(transport, until)` one fault: a kind from the catalogue that makes sense on the transport (and
  that a correct client can survive: no invalid keys, no fatal close codes), its parameters, and its moment —
  at a time, or a delay after the nth server event of a type;
- `fault_schedules(...)` a few of those; `user_behaviours(...)` the user's turns: text or audio, their timing,
  barge-ins (an audio turn spoken while the model is still answering);
- `scenarios(...)` both together as scenario data (`spec.from_dict` reads it).

Each run costs seconds of wall time, so the search is built for a small budget: scenarios of a few seconds
(replies at twice real time), two turns and up to three faults by default, `max_examples=budget`, and
shrinking bounded by a number of further runs. A run already made is not made again (its outcome is kept), so
the shrinker's repeats and hypothesis's final replay of the minimal failure cost nothing and agree with what
was seen. The example database lives in `runs/.hypothesis-explore`: a failure found once is tried first next
time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from rtsim.simulator.faults import CATALOGUE

from .runner import CLIENTS, DEFAULT_CLIENT, ClientSpec, run_one
from .spec import from_dict

DATABASE = Path("runs") / ".hypothesis-explore"
PACING = 0.5  # replies delivered at twice real time: shorter runs, the same shape
FIRST_TURN = "My name is Alice."  # a fact, so a lost context shows
LATER_TURNS = (
    "What is my name?",
    "Do you still remember my name?",
    "What time is it?",
)
ANSWER_ROOM = {
    "text": 2.0,
    "audio": 3.5,
}  # after the last turn, time for its reply (audio: speech, VAD, reply)
# Invariants that hold for a correct client whatever the schedule: none of them fails merely because a fault
# did not happen (a check like `reconnected_within` would, when the drop came between sessions).
CHECKS: tuple[Any, ...] = (
    "no_lost_turns",
    "context_restored",
    "no_duplicate_responses",
    "no_leaked_sessions",
    "backoff",
    "tokens_not_retried_blindly",
    "survives_errors",
    "respects_retry_after",
    "truncate_within_delivered",
)
EARLIEST_FAULT = 1.0
_EVENT_COUNTS = {"response.created": 3, "response.output_audio.delta": 30, "response.done": 2}


def _tenths(low: float, high: float) -> st.SearchStrategy[float]:
    """Seconds in tenths: readable schedules, and they shrink towards `low`."""
    return st.integers(round(low * 10), max(round(low * 10), round(high * 10))).map(lambda n: n / 10)


# Parameters per fault kind, for the kinds that make sense in generated chaos; the order is the shrinker's
# preference (towards the first). Kinds a correct client must give up on (an invalid key, 1008, 3000, a 401)
# and the WebRTC black hole (tens of seconds to detect) are left out.
FAULT_PARAMS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "drop": st.just({}),
    "close": st.fixed_dictionaries({"code": st.sampled_from((1011, 1001, 1012, 1013))}),
    "server-error": st.just({}),
    "expire-session": st.fixed_dictionaries({"ending": st.sampled_from(("both", "close", "error"))}),
    "stall": st.fixed_dictionaries({"seconds": _tenths(0.5, 3.0)}),
    "latency": st.fixed_dictionaries({"ms": st.integers(50, 600), "jitter_ms": st.integers(0, 100)}),
    "slow-first-delta": st.fixed_dictionaries({"ms": st.integers(200, 1500)}),
    "duplicate-event": st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ("response.done", "response.output_audio.delta", "conversation.item.done")
            ),
            "count": st.integers(1, 3),
        }
    ),
    "reorder-events": st.fixed_dictionaries({"count": st.integers(2, 5)}),
    "benign-error": st.fixed_dictionaries(
        {"code": st.sampled_from(("response_cancel_not_active", "conversation_already_has_active_response"))}
    ),
    "transcription-failed": st.just({}),
    "expire-tokens": st.just({}),
    "rate-limit": st.fixed_dictionaries({"seconds": _tenths(0.5, 2.0), "retry_after": _tenths(0.2, 1.0)}),
    "reject-connects": st.fixed_dictionaries(
        {"count": st.integers(1, 2), "status": st.sampled_from((503, 500, 502, 429))}
    ),
    "ice-disconnect-recover": st.fixed_dictionaries({"seconds": _tenths(0.5, 2.0)}),
    "datachannel-close": st.just({}),
    "sctp-abort": st.just({}),
    "dtls-close": st.just({}),
    # A bad network, not a dead one: loss and delay a correct client rides out without a new call.
    "webrtc-loss": st.fixed_dictionaries(
        {
            "percent": st.integers(1, 20),
            "direction": st.sampled_from(("both", "in", "out")),
            "seconds": _tenths(0.5, 3.0),
        }
    ),
    "webrtc-latency": st.fixed_dictionaries(
        {"ms": st.integers(20, 300), "jitter_ms": st.integers(0, 50), "seconds": _tenths(0.5, 3.0)}
    ),
}


def fault_kinds(transport: str, only: Sequence[str] | None = None) -> list[str]:
    """The generated kinds for a transport: in the catalogue and meant for that transport; `only` picks some,
    in its order (the shrinker's preference goes to the first)."""
    kinds = [kind for kind in FAULT_PARAMS if kind in CATALOGUE and transport in CATALOGUE[kind].transports]
    if only is not None:
        unknown = set(only) - set(kinds)
        if unknown:
            raise ValueError(
                f"no generated {transport} fault kind {sorted(unknown)} (known: {', '.join(kinds)})"
            )
        kinds = list(dict.fromkeys(only))
    return kinds


def moments(until: float) -> st.SearchStrategy[dict[str, Any]]:
    """When a fault happens: at a time in [1, until], or a delay after the nth server event of a type.

    Not before 1 s: a client connects some tenths of a second after it starts, and a fault before that misses
    (or, at the edge, sometimes hits): the shrinker would drive a schedule to that edge and leave it flaky.
    """
    absolute = _tenths(EARLIEST_FAULT, max(EARLIEST_FAULT, until)).map(lambda at: {"at": at})
    relative = st.sampled_from(tuple(_EVENT_COUNTS)).flatmap(
        lambda event: st.tuples(st.integers(1, _EVENT_COUNTS[event]), _tenths(0.0, 1.0)).map(
            lambda nth_delay: {"after": {"event": event, "nth": nth_delay[0], "delay": nth_delay[1]}}
        )
    )
    return st.one_of(absolute, relative)


def fault_steps(
    transport: str = "websocket", until: float = 4.0, kinds: Sequence[str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    kinds = fault_kinds(transport, kinds)
    return st.sampled_from(kinds).flatmap(
        lambda kind: st.tuples(moments(until), FAULT_PARAMS[kind]).map(
            lambda moment_params: {
                **moment_params[0],
                "kind": kind,
                **({"params": moment_params[1]} if moment_params[1] else {}),
            }
        )
    )


def fault_schedules(
    transport: str = "websocket",
    until: float = 4.0,
    max_faults: int = 3,
    kinds: Sequence[str] | None = None,
    min_faults: int = 1,
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """One to `max_faults` faults: a run without any is `rtsim run`'s business, not chaos's."""
    return st.lists(fault_steps(transport, until, kinds), min_size=min_faults, max_size=max_faults)


@st.composite
def user_behaviours(draw: st.DrawFn, max_turns: int = 2) -> list[dict[str, Any]]:
    """The user's turns: the first gives a fact; later ones ask, tell, or barge in over the reply."""
    turns = [{"at": draw(_tenths(0.2, 0.6)), "say": FIRST_TURN}]
    if draw(st.booleans()):
        turns[0]["mode"] = "audio"
    # distinct sayings: the checks tell turns apart by what was said
    later = draw(st.permutations(LATER_TURNS))[: draw(st.integers(min(1, max_turns - 1), max_turns - 1))]
    for say in later:
        previous = turns[-1]
        if draw(st.booleans()) and previous.get("mode", "text") == "text":
            # a barge-in: the user speaks while the previous reply is still playing
            gap, mode = draw(_tenths(0.5, 1.0)), "audio"
        else:
            room = ANSWER_ROOM[previous.get("mode", "text")]
            gap, mode = draw(_tenths(room, room + 1.0)), draw(st.sampled_from(("text", "audio")))
        turn: dict[str, Any] = {
            "at": round(previous["at"] + gap, 1),
            "say": say,
        }
        if mode == "audio":
            turn["mode"] = "audio"
        turns.append(turn)
    return turns


@st.composite
def scenarios(
    draw: st.DrawFn,
    transport: str = "websocket",
    max_faults: int = 3,
    max_turns: int = 2,
    kinds: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A whole scenario as plain data: user behaviour, then faults within the time it runs."""
    turns = draw(user_behaviours(max_turns=max_turns))
    last = turns[-1]
    duration = round(last["at"] + ANSWER_ROOM[last.get("mode", "text")], 1)
    data: dict[str, Any] = {
        "name": "explored",
        "transport": transport,
        "server": {"pacing": PACING},
        "duration": duration,
        "user": turns,
        "faults": draw(fault_schedules(transport, round(duration - 1.0, 1), max_faults, kinds)),
        "checks": list(CHECKS),
    }
    return data


# ---- running ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    seconds: float = 0.0


class CheckFailed(AssertionError):
    """What hypothesis sees when a scenario fails: the scenario data and the checkers' reasons."""

    def __init__(self, data: Mapping[str, Any], outcome: Outcome) -> None:
        super().__init__("; ".join(outcome.reasons))
        self.data = dict(data)
        self.outcome = outcome


@dataclass
class ExploreReport:
    client: str
    runs: int
    seconds: float
    failures_seen: int
    minimal: dict[str, Any] | None = None
    outcome: Outcome | None = None
    written: Path | None = None
    first_failure_run: int | None = None


def _key(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)


class Explorer:
    """Runs generated scenarios against one client, each at most once, within a bound on real runs."""

    def __init__(
        self,
        client: ClientSpec,
        *,
        max_runs: int,
        seed: int,
        out_dir: Path,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.client, self.max_runs, self.seed, self.out_dir = client, max_runs, seed, out_dir
        self.progress = progress or (lambda line: None)
        self.outcomes: dict[str, Outcome] = {}
        self.runs = 0
        self.failures = 0
        self.first_failure_run: int | None = None

    def outcome(self, data: Mapping[str, Any]) -> Outcome:
        key = _key(data)
        if key in self.outcomes:
            return self.outcomes[key]
        if self.runs >= self.max_runs:
            # Out of budget: an untried schedule counts as passing, so the shrinker keeps what it has.
            return Outcome(True)
        self.runs += 1
        # each run keeps its own history and client log (the name is not part of what was generated)
        scenario = from_dict(
            {**data, "name": f"explore-run-{self.runs:03d}"}, source=f"explore run {self.runs}"
        )
        result = asyncio.run(run_one(scenario, self.client, seed=self.seed, out_dir=self.out_dir / "runs"))
        outcome = Outcome(
            result.passed,
            [f"{v.name}: {v.reason}" for v in result.verdicts if not v.ok],
            list(result.faults),
            result.seconds,
        )
        self.outcomes[key] = outcome
        if not outcome.passed:
            self.failures += 1
            self.first_failure_run = self.first_failure_run or self.runs
        status = "FAIL" if not outcome.passed else "pass"
        schedule = "; ".join(_describe(step) for step in data["faults"]) or "no faults"
        self.progress(
            f"[run {self.runs}] {status} {result.seconds:4.1f}s  {len(data['user'])} turn(s); {schedule}"
            + (f"  -> {outcome.reasons[0]}" if outcome.reasons else "")
        )
        return outcome


def _describe(step: Mapping[str, Any]) -> str:
    params = ",".join(f"{k}={v}" for k, v in (step.get("params") or {}).items())
    after = step.get("after")
    when = f"t={step['at']}s" if "at" in step else f"{after['delay']}s after {after['event']} #{after['nth']}"
    return f"{step['kind']}({params}) at {when}"


def explore(
    client: ClientSpec,
    *,
    budget: int = 20,
    shrink_budget: int | None = None,
    seed_value: int = 0,
    transport: str = "websocket",
    out_dir: Path = Path("runs") / "explore",
    database: Path = DATABASE,
    max_faults: int = 3,
    max_turns: int = 2,
    kinds: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExploreReport:
    """Search `budget` generated scenarios for a failing checker; shrink a failure within `shrink_budget`
    further runs (default: `budget`) and write the minimal one to `out_dir`."""
    started = time.monotonic()
    explorer = Explorer(
        client,
        max_runs=budget + (budget if shrink_budget is None else shrink_budget),
        seed=seed_value,
        out_dir=out_dir,
        progress=progress,
    )

    def scenario_passes(data: dict[str, Any]) -> None:
        outcome = explorer.outcome(data)
        if not outcome.passed:
            raise CheckFailed(data, outcome)

    # The saved examples are per client and transport (hypothesis keys its database by the test function, and
    # this is one function for every client).
    scenario_passes._hypothesis_internal_add_digest = f"{client.name}:{client.command}:{transport}".encode()  # type: ignore[attr-defined]
    search = settings(
        database=DirectoryBasedExampleDatabase(str(database)),
        deadline=None,
        max_examples=budget,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        print_blob=False,
    )(
        seed(seed_value)(
            given(scenarios(transport, max_faults=max_faults, max_turns=max_turns, kinds=kinds))(
                scenario_passes
            )
        )
    )
    report = ExploreReport(client.name, 0, 0.0, 0)
    try:
        search()
    except CheckFailed as failure:
        report.minimal, report.outcome = failure.data, failure.outcome
        report.written = write_found(failure, client, seed_value, out_dir, budget)
    report.runs, report.failures_seen = explorer.runs, explorer.failures
    report.first_failure_run = explorer.first_failure_run
    report.seconds = time.monotonic() - started
    return report


def write_found(
    failure: CheckFailed, client: ClientSpec, seed_value: int, out_dir: Path, budget: int
) -> Path:
    name = f"explore-{client.name}-seed{seed_value}"
    reasons = failure.outcome.reasons
    data = {
        "name": name,
        "description": f"Found by rtsim explore against the {client.name} client: " + "; ".join(reasons),
        **{k: v for k, v in failure.data.items() if k not in ("name", "description")},
    }
    from_dict(data, source=name)  # what is written must run
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.yaml"
    header = (
        f"# Found and shrunk by `rtsim explore --client {client.name} --budget {budget} "
        f"--seed {seed_value}`.\n"
        + "".join(f"# Failed: {reason}\n" for reason in reasons)
        + f"# Run it: rtsim run {path}\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110))
    return path


# ---- the command ------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explore",
        help="generate fault schedules against a client; shrink and save what breaks it",
        description="Property-based chaos: hypothesis generates user behaviour and fault schedules, each run "
        "as a scenario against the client; a failing checker is shrunk to a minimal schedule and written as "
        "a scenario file. Failures found are replayed first next time (runs/.hypothesis-explore).",
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--client", choices=sorted(CLIENTS), metavar="NAME", help=f"built-in: {', '.join(CLIENTS)}"
    )
    who.add_argument(
        "--client-cmd", metavar="CMD", help="any program, run as `rtsim run --client-cmd` runs it"
    )
    parser.add_argument("--budget", type=int, default=20, help="generated scenarios to try (default 20)")
    parser.add_argument(
        "--shrink-budget", type=int, help="further runs the shrinker may make (default: the budget)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the search's seed (and the simulator's)")
    parser.add_argument("--transport", choices=("websocket", "webrtc"), default="websocket")
    parser.add_argument("--max-faults", type=int, default=3, help="faults per generated schedule (default 3)")
    parser.add_argument(
        "--kinds", metavar="KIND,...", help="only these fault kinds (default: every generated kind)"
    )
    parser.add_argument("--max-turns", type=int, default=2, help="user turns per scenario (default 2)")
    parser.add_argument("--out", default="runs/explore", metavar="DIR", help="where the found scenario goes")
    parser.add_argument(
        "--database", default=str(DATABASE), metavar="DIR", help="hypothesis's example database"
    )
    parser.set_defaults(func=explore_command)


def explore_command(args: argparse.Namespace) -> int:
    client = (
        ClientSpec.from_command(args.client_cmd)
        if args.client_cmd
        else ClientSpec.named(args.client or DEFAULT_CLIENT[args.transport])
    )
    print(
        f"rtsim explore: {client.name} client, budget {args.budget} scenario(s), seed {args.seed}", flush=True
    )
    try:
        kinds = args.kinds.split(",") if args.kinds else None
        fault_kinds(args.transport, kinds)
    except ValueError as exc:
        print(f"rtsim explore: {exc}", file=sys.stderr)
        return 2
    report = explore(
        client,
        budget=args.budget,
        shrink_budget=args.shrink_budget,
        seed_value=args.seed,
        transport=args.transport,
        out_dir=Path(args.out),
        database=Path(args.database),
        max_faults=args.max_faults,
        max_turns=args.max_turns,
        kinds=kinds,
        progress=lambda line: print("  " + line, flush=True),
    )
    summary = f"{report.runs} run(s) in {report.seconds:.1f}s"
    if report.minimal is None or report.outcome is None:
        print(f"rtsim explore: no failing checker in {summary}")
        return 0
    faults = "; ".join(_describe(step) for step in report.minimal["faults"]) or "no faults"
    print(
        f"rtsim explore: FAILED ({report.failures_seen} failing run(s), first at run "
        f"{report.first_failure_run}); {summary}\n"
        f"  minimal: {len(report.minimal['user'])} turn(s); {faults}\n"
        + "".join(f"  {reason}\n" for reason in report.outcome.reasons)
        + f"  written: {report.written}",
        file=sys.stdout,
    )
    return 1
