"""The naive and official-SDK clients fail the way they should; every client runs as the harness runs it.

The naive client (a fixed-delay auto-restart loop) and the SDK's own reconnect both come back after a drop
with an empty session, which the scripted model exposes ("I don't know your name."); the naive client also
retries an invalid key forever. Then: each client as a subprocess against `rtsim serve` (the harness's path),
and audio turns through server VAD.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rtsim.clients import naive, openai_sdk, reference
from rtsim.simulator.control import call
from tests.support.clients import (
    FAST,
    KEY,
    NAME_TURNS,
    ServerFactory,
    client_env,
    closes,
    log_events,
    received,
    replies,
    run_client,
    sent,
    sessions,
    until,
    write_scenario,
)
from tests.support.faults import inject

FORGOTTEN = "I don't know your name."
ROOT = Path(__file__).resolve().parents[2]


# ---- the naive client: fixed-delay auto-restart ------------------------------------------------------------


async def test_naive_client_comes_back_without_context(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = await server_factory(pacing=0.0)
    env = client_env(server, write_scenario(tmp_path, NAME_TURNS, end_at=2.0), RTSIM_NAIVE_DELAY_SCALE="0.1")
    client = asyncio.create_task(run_client(naive, env))
    await until(lambda: replies(server))
    await inject(server, "drop")
    code, log = await client

    assert code == 0
    first, second = (record["session"] for record in sessions(server))
    assert (second, "completed", FORGOTTEN) in replies(server)  # a fresh session, the name forgotten
    assert len(received(server, "conversation.item.create", second)) == 1  # the question, nothing restored
    # It did re-send its configuration (every new session gets the same session.update).
    assert len(received(server, "session.update", second)) == 1
    # ConnectionClosedError → the fixed 5 s (scaled by 0.1), with the API key on the socket itself.
    (lost,) = log_events(log, "connection_lost")
    assert lost["code"] == 1006 and lost["delay"] == 5
    handshakes = server.history.select(kind="handshake")
    assert 0.45 <= handshakes[1]["t"] - closes(server)[first]["t"] <= 1.0
    assert {h["auth"] for h in handshakes} == {"api_key"}


async def test_naive_client_retries_an_invalid_key_forever(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = await server_factory(pacing=0.0, api_keys=["sk-the-only-key"])
    env = client_env(server, write_scenario(tmp_path, NAME_TURNS, end_at=1.6), RTSIM_NAIVE_DELAY_SCALE="0.05")
    code, log = await run_client(naive, env)

    assert code == 0  # it never gives up; the user's quit at end_at ends it
    handshakes = server.history.select(kind="handshake")
    assert len(handshakes) >= 5
    assert all(h["reason"] == "invalid_api_key" for h in handshakes)
    assert {c["code"] for c in server.history.select(kind="close")} == {3000}
    # A fixed 0.25 s between attempts (5 s scaled): no backoff, no growth, no end.
    gaps = [b["t"] - a["t"] for a, b in pairwise(handshakes)]
    assert all(0.2 <= gap <= 0.5 for gap in gaps)
    assert {e["code"] for e in log_events(log, "connection_lost")} == {3000}
    assert {e["turn"] for e in log_events(log, "turn_lost")} == {0, 1}  # nobody ever heard the user


async def test_naive_client_treats_the_session_cap_as_a_3_s_restart(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = await server_factory(pacing=0.0, max_session=1.0)
    turns = [{"at": 0.1, "say": "My name is Alice."}, {"at": 1.6, "say": "What is my name?"}]
    env = client_env(server, write_scenario(tmp_path, turns, end_at=2.0), RTSIM_NAIVE_DELAY_SCALE="0.1")
    code, log = await run_client(naive, env)

    assert code == 0
    assert log_events(log, "session_expired")[0]["code"] == 1001  # ConnectionClosedOK: the 3 s path
    assert sent(server, "error")[0]["event"]["error"]["code"] == "session_expired"  # the user met the cap
    assert replies(server)[-1][2] == FORGOTTEN


# ---- the official SDK's reconnect --------------------------------------------------------------------------


async def test_openai_sdk_reconnects_but_restores_nothing(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = await server_factory(pacing=0.0)
    scenario = write_scenario(tmp_path, NAME_TURNS, end_at=2.0, instructions="The user is called Bob.")
    client = asyncio.create_task(run_client(openai_sdk, client_env(server, scenario)))
    await until(lambda: replies(server))
    await inject(server, "drop")
    code, log = await client

    assert code == 0
    first, second = (record["session"] for record in sessions(server))
    (reconnecting,) = log_events(log, "reconnecting")
    assert reconnecting["close_code"] == 1006 and reconnecting["attempt"] == 1
    # The first session knew Alice (the user's words beat the instructions); the second knows nothing — not
    # even the instructions, which the SDK does not re-send.
    assert (second, "completed", FORGOTTEN) in replies(server)
    assert received(server, "session.update", first) and not received(server, "session.update", second)
    assert closes(server)[second]["code"] == 1000


async def test_openai_sdk_gives_up_on_an_invalid_key(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = await server_factory(pacing=0.0, api_keys=["sk-the-only-key"])
    code, log = await run_client(
        openai_sdk, client_env(server, write_scenario(tmp_path, NAME_TURNS, end_at=3.0))
    )

    assert code == 1  # 3000 is not one of the SDK's reconnect codes
    assert len(server.history.select(kind="handshake")) == 1
    assert log_events(log, "fatal") and log[-1]["t"] < 2.0


# ---- as the harness runs them: subprocesses against `rtsim serve` ------------------------------------------


@pytest.mark.parametrize(
    ("module", "expected"),
    [("reference", "Your name is Alice."), ("naive", FORGOTTEN), ("openai_sdk", FORGOTTEN)],
)
async def test_client_subprocess_against_rtsim_serve(
    serve_process: Callable[..., tuple[Any, str]], tmp_path: Path, module: str, expected: str
) -> None:
    _, base_url = serve_process("--pacing", "0")
    scenario = write_scenario(tmp_path, [{**NAME_TURNS[0], "at": 0.3}, NAME_TURNS[1]], end_at=2.0)
    env = {
        **os.environ,
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": KEY,
        "RTSIM_SCENARIO": scenario,
        "RTSIM_NAIVE_DELAY_SCALE": "0.1",
        **FAST,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"rtsim.clients.{module}", env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )

    async def history() -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url[: -len("/v1")] + "/_rtsim/history") as r,
        ):
            return [json.loads(line) for line in (await r.text()).splitlines()]

    async def answered() -> bool:
        return any(
            r["kind"] == "event" and r["event"].get("type") == "response.done" for r in await history()
        )

    for _ in range(200):  # the first reply (the subprocess needs a moment to import)
        if await answered():
            break
        await asyncio.sleep(0.05)
    status, _ = await asyncio.to_thread(
        call, base_url, "POST", "/_rtsim/faults", {"kind": "drop", "target": {}}
    )
    assert status == 200
    stdout, _ = await asyncio.wait_for(proc.communicate(), 20)

    assert proc.returncode == 0
    log = [json.loads(line) for line in stdout.decode().splitlines()]
    assert log and all(entry["client"] == module and "t" in entry and "event" in entry for entry in log)
    records = await history()
    texts = [
        r["event"]["response"]["output"][0]["content"][0]["transcript"]
        for r in records
        if r["kind"] == "event" and r["event"].get("type") == "response.done"
    ]
    assert texts[-1] == expected
    assert [r["code"] for r in records if r["kind"] == "close"] == [1006, 1000]


# ---- audio turns through server VAD ------------------------------------------------------------------------


async def test_reference_audio_turns_and_a_spoken_barge_in(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("transcripts:\n  - My name is Alice.\n  - What is my name?\n")
    server = await server_factory(pacing=1.0, script=str(script))
    turns = [
        {"at": 0.1, "say": "My name is Alice.", "mode": "audio"},
        # The reply ("You said: My name is Alice.", ~1.8 s) starts at ~1.7 s: this turn talks over it.
        {"at": 2.3, "say": "What is my name?", "mode": "audio"},
    ]
    code, log = await run_client(
        reference, client_env(server, write_scenario(tmp_path, turns, end_at=5.5), **FAST)
    )
    if not sent(server, "input_audio_buffer.speech_started"):
        pytest.skip("the simulator's server VAD is not integrated (no speech_started was sent)")

    assert code == 0
    (_, first_status, first_text), (_, second_status, second_text) = replies(server)
    assert first_status == "cancelled" and first_text.startswith("You said:")
    assert (second_status, second_text) == ("completed", "Your name is Alice.")
    cancelled = [r for r in sent(server, "response.done") if r["event"]["response"]["status"] == "cancelled"]
    assert cancelled[0]["event"]["response"]["status_details"]["reason"] == "turn_detected"
    # The client never commits or asks for a response itself: server VAD does both.
    assert not received(server, "input_audio_buffer.commit") and not received(server, "response.create")
    (truncate,) = received(server, "conversation.item.truncate")
    assert 200 <= truncate["event"]["audio_end_ms"] <= 1200  # what had played when the user spoke
    assert truncate["seq"] > cancelled[0]["seq"]  # truncated after the server closed the item
    assert not sent(server, "error")
    assert log_events(log, "summary")[0]["answered"] == 1


# ---- the contract's edges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [reference, naive, openai_sdk], ids=lambda m: m.__name__.split(".")[-1])
@pytest.mark.parametrize(
    "scenario",
    [None, {"name": "x", "model": "gpt-realtime", "turns": [{"at": -1, "say": "hi"}], "end_at": 1}],
    ids=["missing-env", "negative-at"],
)
async def test_clients_exit_2_on_an_unusable_environment(
    tmp_path: Path, module: Any, scenario: dict[str, Any] | None
) -> None:
    env: dict[str, str] = {}
    if scenario is not None:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(scenario))
        env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": KEY, "RTSIM_SCENARIO": str(path)}
    code, log = await run_client(module, env)
    assert code == 2
    assert log_events(log, "usage_error")
