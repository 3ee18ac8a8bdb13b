"""`rtsim run` end to end with an external client program (--client-cmd), as a user in any language would."""

from __future__ import annotations

import json
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from rtsim.scenarios.runner import ClientSpec, run_one
from rtsim.scenarios.spec import from_dict
from rtsim.simulator.cli import main as rtsim

# A minimal client in the interface of clients/README.md: plain websockets, no reconnect logic at all.
# LEAVE_OPEN=1 makes it exit without closing (a leaked session).
MINIMAL_CLIENT = textwrap.dedent("""
    import asyncio, json, os, time
    from websockets.asyncio.client import connect

    async def main():
        scenario = json.load(open(os.environ["RTSIM_SCENARIO"]))
        url = os.environ["OPENAI_BASE_URL"].replace("http", "ws", 1) + "/realtime?model=" + scenario["model"]
        started = time.monotonic()
        auth = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
        ws = await connect(url, additional_headers=auth)
        await ws.recv()
        for turn in scenario["turns"]:
            await asyncio.sleep(max(0, started + turn["at"] - time.monotonic()))
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message",
                "role": "user", "content": [{"type": "input_text", "text": turn["say"]}]}}))
            await ws.send(json.dumps({"type": "response.create"}))
            while json.loads(await ws.recv())["type"] != "response.done":
                pass
        await asyncio.sleep(max(0, started + scenario["end_at"] - time.monotonic()))
        if os.environ.get("LEAVE_OPEN"):
            os._exit(0)
        await ws.close()

    asyncio.run(main())
""")


@pytest.fixture
def minimal_client(tmp_path: Path) -> str:
    path = tmp_path / "minimal_client.py"
    path.write_text(MINIMAL_CLIENT)
    return f"{sys.executable} {path}"


SCENARIO = {
    "name": "two-turns",
    "server": {"pacing": 0},
    "duration": 2.5,
    "user": [{"at": 0.2, "say": "My name is Alice."}, {"at": 1.0, "say": "What is my name?"}],
    "checks": ["no_lost_turns", "no_leaked_sessions", {"answer": {"turn": 1, "contains": "Alice"}}],
}


def write_scenario(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_rtsim_run_passes_a_good_client_and_writes_junit_and_histories(
    tmp_path: Path, minimal_client: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = write_scenario(tmp_path, SCENARIO)
    junit = tmp_path / "report.xml"
    code = rtsim(
        [
            "run",
            str(scenario),
            "--client-cmd",
            minimal_client,
            "--out",
            str(tmp_path / "runs"),
            "--junit",
            str(junit),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "two-turns" in out and "PASS" in out and "1 passed, 0 failed" in out
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    (history,) = (tmp_path / "runs").glob("*/two-turns--custom.history.jsonl")
    kinds = {json.loads(line)["kind"] for line in history.read_text().splitlines()}
    assert {"handshake", "session", "event", "close"} <= kinds


def test_rtsim_run_fails_a_leaking_client_with_the_reason(
    tmp_path: Path, minimal_client: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAVE_OPEN", "1")
    scenario = write_scenario(tmp_path, SCENARIO)
    junit = tmp_path / "report.xml"
    code = rtsim(
        [
            "run",
            str(scenario),
            "--client-cmd",
            minimal_client,
            "--out",
            str(tmp_path / "runs"),
            "--junit",
            str(junit),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    # the process ended without a close frame: the OS closed its socket, the server saw a bare 1006
    assert "FAIL" in out and "no_leaked_sessions" in out and "not closed by the client" in out
    failure = ElementTree.parse(junit).getroot().find("testcase/failure")
    assert failure is not None and "no_leaked_sessions" in (failure.text or "")


async def test_event_relative_faults_follow_the_client(tmp_path: Path, minimal_client: str) -> None:
    scenario = from_dict(
        {
            **SCENARIO,
            "name": "drop-after-first-answer",
            "faults": [{"after": {"event": "response.done", "nth": 1, "delay": 0.1}, "kind": "drop"}],
            "checks": ["reconnected_within"],
        }
    )
    result = await run_one(scenario, ClientSpec.from_command(minimal_client), out_dir=tmp_path)
    records = [json.loads(line) for line in result.history_path.read_text().splitlines()]  # type: ignore[union-attr]
    (fault,) = [r for r in records if r["kind"] == "fault"]
    first_done = next(r for r in records if r["kind"] == "event" and r["event"]["type"] == "response.done")
    assert fault["fault"] == "drop" and fault["route"] == "scenario"
    assert 0.1 <= fault["t"] - first_done["t"] < 0.5
    assert not result.passed  # the minimal client never reconnects, and the checker says so
    assert "never opened another session" in result.verdicts[0].reason


async def test_toxics_sit_between_client_and_simulator(tmp_path: Path, minimal_client: str) -> None:
    scenario = from_dict(
        {
            **SCENARIO,
            "name": "slow-network",
            "faults": [
                {"at": 0, "kind": "toxic", "params": {"type": "latency", "attributes": {"latency": 400}}}
            ],
        }
    )
    result = await run_one(scenario, ClientSpec.from_command(minimal_client), out_dir=tmp_path)
    assert result.passed, [v.reason for v in result.verdicts if not v.ok]
    records = [json.loads(line) for line in result.history_path.read_text().splitlines()]  # type: ignore[union-attr]
    assert [r["fault"] for r in records if r["kind"] == "fault"] == ["toxic:latency"]
    # the client's requests crossed the proxy: its first event reached the server ≥ 400 ms after the handshake
    handshake = next(r for r in records if r["kind"] == "handshake")
    first_in = next(r for r in records if r["kind"] == "event" and r["dir"] == "in")
    assert first_in["t"] - handshake["t"] >= 0.4


async def test_a_run_against_a_running_simulator_with_server_url(tmp_path: Path, minimal_client: str) -> None:
    from rtsim.simulator.demo import start_server

    proc, url = start_server()
    try:
        scenario = from_dict(
            {
                **SCENARIO,
                "name": "remote",
                "faults": [
                    {"after": {"event": "response.done", "nth": 1, "delay": 0.1}, "kind": "benign-error"}
                ],
                "checks": ["no_lost_turns", "survives_errors", {"answer": {"turn": 1, "contains": "Alice"}}],
            }
        )
        result = await run_one(
            scenario, ClientSpec.from_command(minimal_client), out_dir=tmp_path, server_url=url
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert result.passed, [v.reason for v in result.verdicts if not v.ok]
    records = [json.loads(line) for line in result.history_path.read_text().splitlines()]  # type: ignore[union-attr]
    assert {r["kind"] for r in records} >= {"handshake", "session", "event", "fault", "close"}
    assert [r["fault"] for r in records if r["kind"] == "fault"] == ["benign-error"]  # via the control API


async def test_toxiproxy_url_puts_the_run_through_that_toxiproxy(
    tmp_path: Path, minimal_client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtsim.simulator.toxiproxy import ToxiproxyServer

    external = ToxiproxyServer()
    api_url = await external.start("127.0.0.1", 0)
    monkeypatch.setenv("TOXIPROXY_URL", api_url)
    created: list[str] = []
    original = external.create_proxy

    async def spy(name: str, upstream: str, **kwargs: object) -> object:
        created.append(name)
        return await original(name, upstream, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(external, "create_proxy", spy)
    try:
        scenario = from_dict(
            {
                **SCENARIO,
                "name": "via-toxiproxy-url",
                "faults": [
                    {"at": 0, "kind": "toxic", "params": {"type": "latency", "attributes": {"latency": 100}}}
                ],
            }
        )
        result = await run_one(scenario, ClientSpec.from_command(minimal_client), out_dir=tmp_path)
    finally:
        await external.stop()
    assert result.passed, [v.reason for v in result.verdicts if not v.ok]
    assert created and created[0].startswith("rtsim-via-toxiproxy-url")
    assert any("real proxy" in line for line in result.faults)
