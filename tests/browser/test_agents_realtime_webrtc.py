"""`@openai/agents-realtime` (npm, pinned in the Makefile) over its WebRTC transport in headless Chromium,
from a page on another origin than rtsim: the official browser bundle, unchanged, with only its `url` set.

    make npm-browser && .venv/bin/pytest tests/browser/test_agents_realtime_webrtc.py

Its offer carries `X-OpenAI-Agents-SDK` (so CORS must allow it, as the real API does) and it reads the
call id from `Location` (so that must be exposed)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rtsim.clients.browser import CHROMIUM_FLAGS
from rtsim.clients.webrtc_call import mint_token
from rtsim.scenarios.screenshot import chromium_path
from rtsim.simulator import audio
from rtsim.simulator.server import RealtimeServer

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "build" / "npm-browser" / "node_modules" / "@openai" / "agents-realtime" / "dist" / "bundle"
PAGE = Path(__file__).parent / "agents_realtime" / "index.html"
KEY = "sk-test-key"
RATE = 48000


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.asynccontextmanager
async def agents_page(microphone_pcm: bytes) -> AsyncIterator[Any]:
    """The page in a fresh Chromium whose fake microphone plays `microphone_pcm` (48 kHz mono pcm16)."""
    executable = chromium_path()
    if executable is None:
        _missing("no Chromium: apt-get install chromium")
    if not (BUNDLE / "openai-realtime-agents.mjs").exists():
        _missing("no @openai/agents-realtime: make npm-browser")
    playwright_api = pytest.importorskip("playwright.async_api")
    app = web.Application()

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    app.router.add_get("/", index)
    app.router.add_static("/agents/", BUNDLE)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory(prefix="rtsim-agents-") as work:
        microphone = Path(work) / "microphone.wav"  # the SDK opens the microphone: this is what it hears
        with wave.open(str(microphone), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(microphone_pcm)
        async with playwright_api.async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(Path(work) / "profile"),
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}%noloop"],
            )
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(f"http://localhost:{port}/")  # another origin than the API's 127.0.0.1
            await page.wait_for_function("window.ready === true")
            yield page
            await context.close()
    await runner.cleanup()


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(RATE * seconds)


async def test_agents_realtime_completes_a_text_turn_over_webrtc(server: RealtimeServer) -> None:
    token = await mint_token(server.base_url, KEY)
    async with agents_page(silence(20)) as page:  # a silent microphone: VAD stays quiet
        result = await page.evaluate(
            "(args) => window.textTurn(args)",
            {"apiBase": server.base_url, "token": token["value"], "text": "My name is Alice."},
        )
    assert result["status"] == "completed", result
    assert "Alice" in result["transcript"]
    assert result["callId"] and result["callId"].startswith("rtc_")  # read from the exposed Location
    assert {"session.created", "session.updated", "response.created"} <= set(result["seen"])
    handshakes = server.history.select(kind="handshake")
    assert handshakes and handshakes[-1]["transport"] == "webrtc"


async def test_agents_realtime_completes_a_server_vad_audio_turn_over_webrtc(server: RealtimeServer) -> None:
    token = await mint_token(server.base_url, KEY)
    # Capture starts when the SDK opens the microphone: a second of silence, the speech, then silence.
    speech = audio.speech_for_text("How are you today?", seed=0, rate=RATE)
    async with agents_page(silence(1) + speech + silence(15)) as page:
        result = await page.evaluate(
            "(args) => window.audioTurn(args)", {"apiBase": server.base_url, "token": token["value"]}
        )
    assert result["status"] == "completed", result
    assert {"input_audio_buffer.speech_started", "input_audio_buffer.committed"} <= set(result["seen"])
    speech_events = server.history.select(kind="event")
    assert any(r["event"]["type"] == "input_audio_buffer.speech_stopped" for r in speech_events)
