"""`@openai/agents-realtime` (npm, pinned in the Makefile) over its WebRTC transport in headless Chromium:
the compatibility matrix's browser cell (compat/browser/), run as the matrix runs it.

    make npm-browser && .venv/bin/pytest tests/browser/test_agents_realtime_webrtc.py

The page is on another origin than rtsim (`localhost` against `127.0.0.1`), so the SDK's offer goes through
CORS: it carries `X-OpenAI-Agents-SDK` (which must be allowed, as the real API does) and the SDK reads the
call id from `Location` (which must be exposed). Over `--tls` Chromium trusts the simulator's key pinned."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from rtsim.scenarios.runner import ClientSpec, RunResult, run_one
from rtsim.scenarios.screenshot import chromium_path
from rtsim.scenarios.spec import LIBRARY, load

# One Chromium at a time under `pytest -n`: these tests read browser timing.
pytestmark = pytest.mark.xdist_group("chromium")

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "build" / "npm-browser" / "node_modules" / "@openai" / "agents-realtime" / "dist" / "bundle"
ADAPTER = ROOT / "compat" / "browser" / "agents_realtime_adapter.py"


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def cell() -> ClientSpec:
    if chromium_path() is None:
        _missing("no Chromium: apt-get install chromium")
    if not (BUNDLE / "openai-realtime-agents.mjs").exists():
        _missing("no @openai/agents-realtime: make npm-browser")
    pytest.importorskip("playwright.async_api")
    return ClientSpec("agents-realtime-browser", [sys.executable, str(ADAPTER)], ready_file=True)


def client_log(result: RunResult) -> list[dict[str, Any]]:
    assert result.log_path is not None
    lines = result.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def history(result: RunResult, kind: str) -> list[dict[str, Any]]:
    assert result.history_path is not None
    records = [json.loads(line) for line in result.history_path.read_text().splitlines()]
    return [r for r in records if r.get("kind") == kind]


async def test_the_sdk_completes_a_text_and_a_server_vad_voice_turn_over_webrtc_and_tls(
    cell: ClientSpec, tmp_path: Path
) -> None:
    scenario = load(ROOT / "compat" / "scenarios" / "text-and-voice.yaml")
    result = await run_one(scenario, cell, out_dir=tmp_path, tls=True)
    assert result.passed, [v for v in result.verdicts if not v.ok]
    assert result.exit_code == 0
    (handshake,) = history(result, "handshake")
    assert handshake["transport"] == "webrtc" and handshake["auth"] == "ephemeral"  # minted by its backend
    log = client_log(result)
    connected = next(entry for entry in log if entry["event"] == "connect_returned")
    assert connected["callId"] == handshake["call_id"]  # read from the exposed Location
    # The voice turn was heard as speech, started and stopped by server VAD, from the fake microphone.
    assert [e["event"] for e in log if e["event"].startswith("speech_")] == [
        "speech_started",
        "speech_stopped",
    ]
    replies = [e["text"] for e in log if e["event"] == "reply"]
    assert len(replies) == 2 and "Alice" in replies[1]


async def test_after_a_data_channel_close_the_sdk_still_says_connected_and_the_turn_is_lost(
    cell: ClientSpec, tmp_path: Path
) -> None:
    """0.20.0 listens for the data channel's `close` only until `session.updated`: what the matrix shows."""
    scenario = load(LIBRARY / "webrtc" / "webrtc-datachannel-close.yaml")
    result = await run_one(scenario, cell, out_dir=tmp_path, tls=True)
    assert not result.passed
    assert any(v.name == "reconnected_within" and not v.ok for v in result.verdicts)
    log = client_log(result)
    failed = next(entry for entry in log if entry["event"] == "send_failed")
    assert failed["status"] == "connected"
    assert "data channel is not connected" in failed["message"]
    assert any(entry["event"] == "turn_lost" for entry in log)
    assert len(history(result, "handshake")) == 1  # it never called again: no reconnect of its own
