"""`@openai/agents-realtime` over its WebRTC transport in headless Chromium, as a compatibility-matrix cell.

    .venv/bin/rtsim run SCENARIO --tls --client-ready-file \
        --client-cmd '.venv/bin/python compat/browser/agents_realtime_adapter.py'

This process is the app's backend and the browser's driver; the client is the page (compat/browser/index.html,
the official bundle that `make npm-browser` installs into build/npm-browser/, unchanged):

- the backend serves the page on its own loopback port, `localhost` — another origin than the API's
  127.0.0.1, so the SDK's offer goes through CORS as it does against the real API — and mints the ephemeral
  token the page asks it for with OPENAI_API_KEY (which never reaches the page);
- Chromium (the system's, through Playwright; nothing downloaded) hears a fake microphone playing the
  scenario's voice turns (the files rtsim rendered, their trailing silence cut, looped); the page keeps it
  muted with the SDK's `mute()` except while a voice turn is spoken, so server VAD hears each turn begin
  and end;
- over `--tls` Chromium trusts exactly the simulator's certificate: its key is pinned with
  `--ignore-certificate-errors-spki-list`, after this process verified it against SSL_CERT_FILE;
- after a fault the page does what the SDK does and nothing else: 0.20.0 has no reconnect, so a closed call
  stays closed and the later turns are lost.

Exit status 0 when the call was still up at the scenario's end, 1 when it was not (or never came up).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import faulthandler
import hashlib
import os
import ssl
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import BrowserContext, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from scenario import (
    EXIT_FATAL,
    EXIT_OK,
    SAMPLE_RATE,
    STACKS_AFTER_END,
    Log,
    Scenario,
    Turn,
    load,
    play_turns,
    run,
)

ROOT = Path(__file__).resolve().parents[2]
PAGE = Path(__file__).parent / "index.html"
BUNDLE = ROOT / "build" / "npm-browser" / "node_modules" / "@openai" / "agents-realtime" / "dist" / "bundle"
CHROMIUM = os.environ.get("RTSIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = (  # as clients/browser.py runs it
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",  # every datagram stays on 127.0.0.1
)
CONNECT_TIMEOUT = 20.0  # seconds for the SDK's connect() (Chromium's start-up is not in it)


def client_tls() -> ssl.SSLContext:
    """What a Python backend trusts: the system's roots, or SSL_CERT_FILE (the simulator's CA) when set."""
    cafile = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()


async def pinned_spki(base_url: str) -> str | None:
    """The base64 SHA-256 of the API server's public key, for Chromium's SPKI allow-list; None over http.
    The certificate is verified first, so only a server the CA vouches for gets pinned."""
    parts = urlsplit(base_url)
    if parts.scheme != "https":
        return None
    _, writer = await asyncio.open_connection(
        parts.hostname, parts.port or 443, ssl=client_tls(), server_hostname=parts.hostname
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def spoken(pcm: bytes) -> bytes:
    """A rendered voice turn without its trailing silence (the microphone is muted after the turn instead)."""
    trimmed = pcm.rstrip(b"\0")
    return trimmed + b"\0" * (len(trimmed) % 2)


def write_microphone(path: Path, scenario: Scenario) -> dict[int, float]:
    """The fake capture device's WAV (the voice turns' speech, one after another; Chromium loops it), and
    how many seconds each voice turn is spoken for."""
    speech = {t.index: spoken(t.audio()) for t in scenario.turns if t.mode == "audio"}
    pcm = b"".join(speech.values()) or b"\0\0" * SAMPLE_RATE  # a text-only scenario: a silent second
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm)
    return {index: len(audio) / 2 / SAMPLE_RATE for index, audio in speech.items()}


class Backend:
    """The app's backend: the page, the SDK's bundle, and ephemeral tokens minted with the API key."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/favicon.ico", self.no_icon)
        app.router.add_post("/token", self.token)
        app.router.add_static("/agents/", BUNDLE)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://localhost:{port}/"  # `localhost`: another origin than the API's 127.0.0.1

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    async def no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def token(self, request: web.Request) -> web.Response:
        """POST /v1/realtime/client_secrets as the docs' backend does; the page gets the value only."""
        session: dict[str, Any] = {"type": "realtime", "model": self.scenario.model}
        url = self.scenario.base_url.rstrip("/") + "/realtime/client_secrets"
        headers = {"Authorization": f"Bearer {self.scenario.api_key}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
                http.post(url, json={"session": session}, headers=headers, ssl=client_tls()) as response,
            ):
                body = await response.json(content_type=None)
                if response.status != 200:
                    return web.json_response({"status": response.status, "body": body}, status=502)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return web.json_response({"error": repr(exc)}, status=502)
        return web.json_response({"value": body["value"], "expires_at": body.get("expires_at")})


def missing() -> str | None:
    """What this cell cannot run without, if it is not here."""
    if not (BUNDLE / "openai-realtime-agents.mjs").exists():
        return f"no @openai/agents-realtime bundle at {BUNDLE}: make npm-browser"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium (or set RTSIM_CHROMIUM)"
    return None


async def main() -> int:
    scenario = load()
    problem = missing()
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_FATAL
    backend = Backend(scenario)
    page_url = await backend.start()
    spki = await pinned_spki(scenario.base_url)
    with tempfile.TemporaryDirectory(prefix="rtsim-compat-browser-") as work:
        microphone = Path(work) / "microphone.wav"
        speech_seconds = write_microphone(microphone, scenario)
        args = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"]
        if spki is not None:
            args.append(f"--ignore-certificate-errors-spki-list={spki}")
        try:
            async with async_playwright() as playwright:
                context = await playwright.chromium.launch_persistent_context(
                    str(Path(work) / "profile"),  # a new, empty profile (the SPKI flag needs one of its own)
                    executable_path=CHROMIUM,
                    headless=True,
                    args=args,
                )
                try:
                    return await drive(context, page_url, scenario, speech_seconds)
                finally:
                    with contextlib.suppress(Exception):
                        await context.close()
        finally:
            await backend.stop()


async def drive(
    context: BrowserContext, page_url: str, scenario: Scenario, speech_seconds: dict[int, float]
) -> int:
    page = context.pages[0] if context.pages else await context.new_page()
    log: Log | None = None
    early: list[tuple[str, dict[str, Any]]] = []

    def report(event: str, fields: dict[str, Any]) -> None:
        if log is None:
            early.append((event, fields))
        else:
            log(event, **fields)

    await page.expose_function("rtsimReport", report)
    page.on("pageerror", lambda error: report("page_error", {"error": str(error)}))
    page.on("console", lambda m: m.type == "error" and report("console", {"text": m.text}))
    await page.goto(page_url)
    await page.wait_for_function("window.ready === true")
    # The scenario clock (and RTSIM_READY_FILE) start once the page is loaded.
    log = Log("browser-agents-realtime")
    # The stacks are for a page stuck past the end; Chromium's start-up is not the scenario's time.
    faulthandler.dump_traceback_later(scenario.end_at + STACKS_AFTER_END, exit=False)
    log("browser", version=context.browser.version if context.browser else None, page=page_url)
    for event, fields in early:
        log(event, **fields)
    connect = {
        "apiBase": scenario.base_url.rstrip("/"),
        "model": scenario.model,
        "instructions": scenario.instructions,
    }
    try:
        result = await asyncio.wait_for(page.evaluate("(a) => window.connect(a)", connect), CONNECT_TIMEOUT)
    except Exception as exc:  # the SDK's connect() rejected, or never settled
        log("fatal", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
        return EXIT_FATAL
    log("connect_returned", **result)

    async def say(turn: Turn) -> None:
        seconds = speech_seconds.get(turn.index, 0.0)
        sent = await page.evaluate(
            "(t) => window.say(t)", {"mode": turn.mode, "text": turn.say, "seconds": seconds}
        )
        if not sent:
            log("turn_lost", turn=turn.index, reason="the SDK's connection is closed or cannot send")

    await play_turns(scenario, log, say)
    still_up = await page.evaluate("() => window.finish()")
    await asyncio.sleep(0.3)  # the hangup's datagrams leave before the browser goes
    code = EXIT_OK if still_up else EXIT_FATAL
    log("exit", code=code)
    faulthandler.cancel_dump_traceback_later()  # done: closing Chromium is no hang worth the stacks
    return code


if __name__ == "__main__":
    run(main)
