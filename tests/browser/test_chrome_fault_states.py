"""What Chromium itself reports after the WebRTC faults (the README's "as Chrome really behaves"):
a bare peer connection with no watchdog and no reaction, its states timed from the moment of the fault.

    .venv/bin/pytest -s tests/browser/test_chrome_fault_states.py    # prints the measured timelines
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rtsim.clients.browser import CHROMIUM_FLAGS, write_fake_microphone
from rtsim.clients.webrtc_call import mint_token
from rtsim.scenarios.screenshot import chromium_path
from rtsim.simulator.server import RealtimeServer

# One Chromium at a time under `pytest -n`: these tests read browser timing.
pytestmark = pytest.mark.xdist_group("chromium")

KEY = "sk-test-key"
PROBE_PAGE = "<!doctype html><title>probe</title>"
PROBE = """
async ({apiBase, token}) => {
  const t0 = performance.now();
  const log = [];
  const mark = (what, state) => log.push([(performance.now() - t0) / 1000, what, state]);
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTrack(stream.getAudioTracks()[0], stream);
  const dc = pc.createDataChannel("oai-events");
  pc.onconnectionstatechange = () => mark("connection", pc.connectionState);
  pc.oniceconnectionstatechange = () => mark("ice", pc.iceConnectionState);
  dc.onopen = () => mark("datachannel", "open");
  dc.onclose = () => mark("datachannel", "closed");
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 2000);
  });
  const response = await fetch(`${apiBase}/realtime/calls`, {method: "POST", body: pc.localDescription.sdp,
    headers: {Authorization: `Bearer ${token}`, "Content-Type": "application/sdp"}});
  await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
  await new Promise((resolve) => dc.readyState === "open" ? resolve() : dc.addEventListener("open", resolve));
  window.probe = {log, t0, pc};
}
"""


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium")
        pytest.skip("no Chromium: apt-get install chromium")
    playwright_api = pytest.importorskip("playwright.async_api")
    with tempfile.TemporaryDirectory(prefix="rtsim-chrome-") as work:
        microphone = Path(work) / "microphone.wav"
        write_fake_microphone(microphone, 0)
        async with playwright_api.async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(Path(work) / "profile"),
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"],
            )
            page = context.pages[0] if context.pages else await context.new_page()
            # Served from loopback (a page Chromium did not load from a loopback address needs the Local
            # Network Access permission to call one), on its own origin: localhost, not 127.0.0.1.
            app = web.Application()

            async def index(request: web.Request) -> web.Response:
                return web.Response(text=PROBE_PAGE, content_type="text/html")

            app.router.add_get("/", index)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            await page.goto(f"http://localhost:{port}/")
            yield page
            await context.close()
            await runner.cleanup()


async def timeline_after(
    page: Any, server: RealtimeServer, kind: str, wait: float
) -> list[tuple[float, str, str]]:
    """Open a call, inject `kind` on it, wait `wait` seconds: the states Chrome reported, in seconds after."""
    token = await mint_token(server.base_url, KEY)
    await page.evaluate(PROBE, {"apiBase": server.base_url, "token": token["value"]})
    assert server.control is not None
    moment = await page.evaluate("(performance.now() - window.probe.t0) / 1000")
    server.control.inject(kind, {}, {"key": KEY}, None, route="test")
    await page.wait_for_timeout(wait * 1000)
    log = await page.evaluate("window.probe.log")
    after = [(round(t - moment, 2), what, state) for t, what, state in log if t >= moment]
    print(f"\n{kind}: Chromium's states after the fault: {after}")
    return after


def first(timeline: list[tuple[float, str, str]], what: str, state: str) -> float | None:
    return next((t for t, w, s in timeline if (w, s) == (what, state)), None)


@pytest.mark.slow
async def test_after_dtls_close_chrome_closes_the_channel_at_once_but_not_the_connection(
    page: Any, server: RealtimeServer
) -> None:
    timeline = await timeline_after(page, server, "dtls-close", 20)
    channel_closed = first(timeline, "datachannel", "closed")
    assert channel_closed is not None and channel_closed < 1.0
    # The connection stays `connected` until consent checks go unanswered: `disconnected` seconds later,
    # then `failed`; never `closed` (Chrome does not act on the peer's close_notify for the connection).
    disconnected = first(timeline, "connection", "disconnected")
    assert disconnected is not None and 3 < disconnected < 10
    assert "closed" not in [s for _, w, s in timeline if w == "connection"]


@pytest.mark.slow
async def test_after_ice_blackhole_chrome_disconnects_then_fails(page: Any, server: RealtimeServer) -> None:
    timeline = await timeline_after(page, server, "ice-blackhole", 22)
    disconnected = first(timeline, "connection", "disconnected") or first(timeline, "ice", "disconnected")
    failed = first(timeline, "connection", "failed")
    assert disconnected is not None and 3 < disconnected < 10
    assert failed is not None and 10 < failed < 20
