"""The browser reference client as a scenario client: real headless Chromium running `browser_page/`.

    python -m rtsim.clients.browser        (rtsim run --client browser)

This process is the app's backend and the browser's driver; the client itself is the page
(`browser_page/client.js`, the same patterns as `reference_webrtc.py` in the browser's own WebRTC stack):

- the backend serves the page on a second loopback port — another origin than the API, so every REST call
  the page makes to the simulator is cross-origin and goes through CORS as it would against the real API —
  and answers the page's `/config`, `/token` (an ephemeral token minted with the API key, which never
  reaches the page), `/hangup` and `/report`;
- Chromium (the system's, through Playwright's CDP driver; no browser is downloaded) runs with a fake
  microphone fed a WAV of the test-audio kit's speech (`--use-file-for-fake-audio-capture`), so a spoken
  turn is real audio that server VAD hears, and `--allow-loopback-in-peer-connection`, so every datagram
  stays on 127.0.0.1;
- what the page reports (its states, ICE / connection / data-channel states, getStats samples) is printed
  as the client's JSON lines and put into the simulator's history (`POST /_rtsim/client-records`);
- `RTSIM_BROWSER_PAGE=simulator` opens the copy rtsim serves (`/_rtsim/client/?backend=<this backend>`)
  instead: same origin as the API, so no CORS on the API calls, but cross-origin to this backend (which
  allows the simulator's origin only);
- SIGUSR1 reloads the page (the `page-reload` step of a scenario); the page resumes from `sessionStorage`.

The exit status is the page's (0: end_at reached and the call hung up), or EXIT_FATAL if the browser died.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import wave
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from rtsim.clients import tls
from rtsim.clients.common import EXIT_FATAL, EXIT_USAGE, ClientEnv, JsonLog, UsageError, run_cli
from rtsim.clients.reference_webrtc import Settings
from rtsim.clients.webrtc_call import CallRefused, mint_token
from rtsim.simulator import audio
from rtsim.simulator.control import PREFIX, control_root

CLIENT = "browser"
PAGE_DIR = Path(__file__).parent / "browser_page"
RELOAD_SIGNAL = signal.SIGUSR1
CHROMIUM_FLAGS = (
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
    "--allow-loopback-in-peer-connection",
)
FAKE_MIC_RATE = 48000
FAKE_MIC_SECONDS = 20  # looped by Chromium; the page enables the track only while the user speaks
# What the page reports that goes into the history (the rest is only in the client's log).
RECORDED_EVENTS = frozenset(
    {
        "page_loaded",
        "state",
        "transport",
        "stats",
        "health",
        "connected",
        "connect_failed",
        "restored",
        "fatal",
    }
)
EXIT_GRACE = 10.0  # beyond end_at, before a page that never reports its exit is given up on


def write_fake_microphone(path: Path, seed: int) -> None:
    """A WAV of continuous speech-like audio for Chromium's fake capture device (48 kHz mono pcm16)."""
    text = "the quick brown fox jumps over the lazy dog " * 12
    speech = audio.speech_for_text(text, seed=seed, rate=FAKE_MIC_RATE)
    samples = FAKE_MIC_RATE * FAKE_MIC_SECONDS * 2
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_MIC_RATE)
        out.writeframes(speech[:samples])


def page_config(env: ClientEnv, settings: Settings) -> dict[str, Any]:
    """What the page reads from `/config`: the API's base URL, the scenario's user side, the knobs."""
    scenario = env.scenario
    turns = [
        {
            "at": turn.at,
            "say": turn.say,
            "mode": turn.mode,
            # How long the microphone stays live for a spoken turn: the kit's duration for the words.
            "speech_ms": audio.duration_ms_for_text(turn.say),
        }
        for turn in scenario.turns
    ]
    return {
        "api_base": env.base_url,
        "scenario": {
            "name": scenario.name,
            "model": scenario.model,
            "turns": turns,
            "end_at": scenario.end_at,
        },
        "settings": asdict(settings),
    }


class Backend:
    """The app's backend: serves the page and holds the API key (tokens, hangups), and hears the page."""

    def __init__(self, env: ClientEnv, settings: Settings, log: JsonLog) -> None:
        self.env = env
        self.settings = settings
        self.log = log
        self.session = {**env.scenario.session_config(), "model": env.scenario.model}
        self.exit_code: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.records: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.ready_told = False

    @property
    def simulator_origin(self) -> str:
        return control_root(self.env.base_url)

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The page as rtsim serves it (`/_rtsim/client/?backend=...`) calls this backend cross-origin: allow
        that one origin (the simulator's), and no other — this backend mints tokens with the API key."""
        allowed = request.headers.get("Origin") == self.simulator_origin
        if request.method == "POST" and request.content_type != "application/json":
            # Only JSON, which another page can send only after a preflight this backend refuses it.
            return web.json_response({"error": "Content-Type must be application/json"}, status=415)
        if request.method == "OPTIONS" and allowed:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "content-type"
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = self.simulator_origin
            response.headers["Vary"] = "Origin"
        return response

    async def start(self) -> str:
        app = web.Application(middlewares=[self._cors])
        for path in ("/config", "/token", "/hangup", "/report"):
            app.router.add_route("OPTIONS", path, self._preflight)
        app.router.add_get("/", self.index)
        app.router.add_get("/config", self.config)
        app.router.add_post("/token", self.token)
        app.router.add_post("/hangup", self.hangup)
        app.router.add_post("/report", self.report)
        app.router.add_static("/", PAGE_DIR)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # `localhost`, not 127.0.0.1: the page's origin differs from the API's in host as well as port.
        self.url = f"http://localhost:{port}/"
        return self.url

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=403)  # answered by the middleware when the origin is allowed

    def page_url(self, served_by: str) -> str:
        """The page to open: this backend's own copy (another origin than the API), or rtsim's."""
        if served_by == "simulator":
            return f"{self.simulator_origin}/_rtsim/client/index.html?backend={self.url.rstrip('/')}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE_DIR / "index.html")

    async def config(self, request: web.Request) -> web.Response:
        # The page starts its scenario clock now: so does the harness's fault timeline (RTSIM_READY_FILE).
        ready = self.env.raw.get("RTSIM_READY_FILE")
        if ready and not self.ready_told:
            self.ready_told = True
            await asyncio.to_thread(Path(ready).touch)
            self.log("ready")
        return web.json_response(page_config(self.env, self.settings))

    async def token(self, request: web.Request) -> web.Response:
        try:
            minted = await mint_token(
                self.env.base_url, self.env.api_key, session=self.session, ttl=self.settings.token_ttl
            )
        except CallRefused as exc:
            return web.json_response({"error": str(exc)}, status=502)
        except (aiohttp.ClientError, OSError) as exc:
            return web.json_response({"error": repr(exc)}, status=502)
        return web.json_response({"value": minted["value"], "expires_at": minted["expires_at"]})

    async def hangup(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        call_id = str(body.get("call_id") or "")
        if not call_id.startswith("rtc_"):
            return web.json_response({"error": "call_id"}, status=400)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with (
                tls.http_session(self.env.base_url, timeout=aiohttp.ClientTimeout(total=3)) as http,
                http.post(
                    f"{self.env.base_url}/realtime/calls/{call_id}/hangup",
                    headers={"Authorization": f"Bearer {self.env.api_key}"},
                ) as response,
            ):
                return web.json_response({"status": response.status})
        return web.json_response({"status": None})

    async def report(self, request: web.Request) -> web.Response:
        line = await _json_object(request)
        if not isinstance(line.get("event"), str):
            return web.Response(status=400)
        event = line.pop("event")
        line.pop("t", None)  # the log's own clock (since this process started) is the one printed
        self.log(event, **line)
        if event in RECORDED_EVENTS:
            self.records.put_nowait({"event": event, **line})
        if event == "exit" and not self.exit_code.done():
            self.exit_code.set_result(int(line.get("code", EXIT_FATAL)))
        return web.Response(status=204)

    async def forward_records(self) -> None:
        """Put the page's reports into the simulator's history, in batches, as they come."""
        url = control_root(self.env.base_url) + f"{PREFIX}/client-records"
        async with tls.http_session(url, timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                batch = [await self.records.get()]
                while not self.records.empty() and len(batch) < 50:
                    batch.append(self.records.get_nowait())
                body = {"key": self.env.api_key, "client": CLIENT, "records": batch}
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with http.post(url, json=body) as response:
                        if response.status >= 400:
                            self.log("history_refused", status=response.status, body=await response.text())
                for _ in batch:
                    self.records.task_done()


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty one for anything else (the handlers then refuse it)."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def drive(env: ClientEnv, settings: Settings, log: JsonLog, workdir: Path) -> int:
    try:
        from playwright.async_api import async_playwright  # only this client needs it
    except ImportError:
        log("fatal", reason="Playwright is missing: pip install 'rtsim[dev]' (or pip install playwright)")
        return EXIT_FATAL
    from rtsim.scenarios.screenshot import chromium_path

    executable = chromium_path()
    if executable is None:
        log("fatal", reason="no Chromium found (apt-get install chromium, or set RTSIM_CHROMIUM)")
        return EXIT_FATAL
    microphone = workdir / "microphone.wav"
    write_fake_microphone(microphone, env.seed or 0)
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"]
    if (pin := await tls.verified_spki_pin(env.base_url)) is not None:
        flags.append(f"--ignore-certificate-errors-spki-list={pin}")  # the simulator's own certificate only
    backend = Backend(env, settings, log)
    await backend.start()
    forwarding = asyncio.ensure_future(backend.forward_records())
    loop = asyncio.get_running_loop()
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(workdir / "profile"),  # a new, empty profile: no state from any other run
                executable_path=executable,
                headless=True,
                args=flags,
            )
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("console", lambda m: m.type in ("error", "warning") and log("console", text=m.text))
            page.on("pageerror", lambda e: log("page_error", error=str(e)))
            reloads: set[asyncio.Task[Any]] = set()

            def reload() -> None:
                log("reload", reason="SIGUSR1")
                task = asyncio.ensure_future(page.reload(wait_until="commit"))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            loop.add_signal_handler(RELOAD_SIGNAL, reload)
            page_url = backend.page_url(env.raw.get("RTSIM_BROWSER_PAGE", "backend"))
            log("browser", version=context.browser.version if context.browser else None, page=page_url)
            await page.goto(page_url)
            try:
                return await asyncio.wait_for(
                    asyncio.shield(backend.exit_code), env.scenario.end_at + EXIT_GRACE
                )
            except TimeoutError:
                log("fatal", reason="the page never reported its exit")
                return EXIT_FATAL
            finally:
                loop.remove_signal_handler(RELOAD_SIGNAL)
                await asyncio.sleep(0.2)  # the last reports
                with contextlib.suppress(Exception):
                    await context.close()
    finally:
        await _drain(backend)
        forwarding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarding
        await backend.stop()


async def _drain(backend: Backend, timeout: float = 2.0) -> None:
    """Let the queued records reach the history before the process goes."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(backend.records.join(), timeout)


async def main(env: Mapping[str, str], *, out: TextIO | None = None) -> int:
    log = JsonLog(CLIENT, out)
    try:
        client_env = ClientEnv.from_env(env)
        settings = Settings.from_env(client_env)
    except UsageError as exc:
        log("usage_error", message=str(exc))
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="rtsim-browser-") as workdir:
        try:
            code = await drive(client_env, settings, log, Path(workdir))
        except Exception as exc:  # the browser could not start, or died: say so, exit fatally
            log("fatal", reason=repr(exc))
            code = EXIT_FATAL
    log("exit", code=code)
    return code


if __name__ == "__main__":
    run_cli(main)
