"""`@openai/agents-realtime` (npm, pinned in the Makefile) over its WebRTC transport in headless Chromium,
from a page on another origin than rtsim: the official browser bundle, unchanged, with only its `url` set.

    make npm-browser && .venv/bin/pytest tests/browser/test_agents_realtime_webrtc.py

Its offer carries `X-OpenAI-Agents-SDK` (so CORS must allow it, as the real API does) and it reads the
call id from `Location` (so that must be exposed)."""

from __future__ import annotations

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
from rtsim.simulator.server import RealtimeServer

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "build" / "npm-browser" / "node_modules" / "@openai" / "agents-realtime" / "dist" / "bundle"
PAGE = Path(__file__).parent / "agents_realtime" / "index.html"
KEY = "sk-test-key"


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    executable = chromium_path()
    if executable is None:
        _missing("no Chromium: apt-get install chromium")
    if not (BUNDLE / "openai-realtime-agents.mjs").exists():
        _missing("no @openai/agents-realtime: make npm-browser")
    playwright_api = pytest.importorskip("playwright.async_api")
    app = web.Application()
    app.router.add_get("/", lambda request: web.FileResponse(PAGE))
    app.router.add_static("/agents/", BUNDLE)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory(prefix="rtsim-agents-") as work:
        silence = Path(work) / "silence.wav"  # the SDK opens the microphone: a silent one, so VAD stays quiet
        with wave.open(str(silence), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(48000)
            out.writeframes(b"\0\0" * 48000)
        async with playwright_api.async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(Path(work) / "profile"),
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={silence}"],
            )
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(f"http://localhost:{port}/")  # another origin than the API's 127.0.0.1
            await page.wait_for_function("window.ready === true")
            yield page
            await context.close()
    await runner.cleanup()


async def test_agents_realtime_completes_a_text_turn_over_webrtc(page: Any, server: RealtimeServer) -> None:
    token = await mint_token(server.base_url, KEY)
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
