"""The naive client: the auto-restart loop a typical voice app ships with.

What such an app does, and nothing worse:
- `main()` loops forever: a fresh agent (one WebSocket, one new session) each time round.
- `ConnectionClosedOK` (the server closed 1000/1001, e.g. the 60-minute cap) → "Auto-restarting in 3 seconds";
  `ConnectionClosedError` (1006, 1011, 3000, ...) → 5 s; any other error (a refused handshake, a DNS failure)
  → 10 s. Fixed delays, no backoff, no jitter, no limit, and no notion of a fatal outcome: an invalid key is
  retried every 5 s for as long as the app runs.
- Each new session is configured as the first one was (instructions, tools: "full 20 tools available after
  reconnect") but starts with an empty conversation: "each new session starts fresh (no context from previous
  session)".
- The API key goes straight on the WebSocket; no ephemeral tokens, no rotation before the cap, no watchdog of
  its own (the websockets library's default keepalive — a ping every 20 s, 20 s to answer — still runs, as it
  does in such an app).
- The microphone does not wait for the connection: a turn spoken while no session is live (the "3-5 second
  silence") goes nowhere, and one whose reply was cut off is not asked again.
- Ctrl+C ends it cleanly; here the user's Ctrl+C is the scenario's `end_at`, after which it closes 1000 and
  exits 0.

RTSIM_NAIVE_DELAY_SCALE multiplies the 3/5/10 s delays so tests run in compressed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any, TextIO

import websockets
from websockets.asyncio.client import ClientConnection

from rtsim.clients.common import (
    EXIT_OK,
    EXIT_USAGE,
    ClientEnv,
    JsonLog,
    ScheduledTurn,
    TurnSchedule,
    UsageError,
    append_event,
    create_item,
    message_item,
    response_text,
    run_cli,
    stream_utterance,
    utterance,
)

CLIENT = "naive"
SESSION_EXPIRED_DELAY = 3.0  # ConnectionClosedOK
CONNECTION_LOST_DELAY = 5.0  # ConnectionClosedError
OTHER_ERROR_DELAY = 10.0  # anything else


class NaiveAgent:
    """One connection, one session: the app's voice agent."""

    def __init__(self, env: ClientEnv, log: JsonLog) -> None:
        self.env, self.log = env, log
        self.websocket: ClientConnection | None = None
        self.running = False

    async def run(self) -> None:
        """Connect, configure, and read events until the connection closes (which raises, as in the app)."""
        self.websocket = await websockets.connect(
            self.env.realtime_url(),
            additional_headers={"Authorization": f"Bearer {self.env.api_key}"},
            ssl=self.env.tls_context,
        )
        self.running = True
        self.log("connected")
        await self.websocket.send(
            json.dumps({"type": "session.update", "session": self.env.scenario.session_config()})
        )
        while True:
            # recv(), not `async for`: a normal close must surface as ConnectionClosedOK, which the app's
            # main() catches as "session expired".
            event = json.loads(await self.websocket.recv())
            self.handle(event)

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.created":
            self.log("session", session=(event.get("session") or {}).get("id"))
        elif kind == "response.done":
            response = event.get("response") or {}
            self.log("reply", status=response.get("status"), text=response_text(response))
        elif kind == "error":
            error = event.get("error") or {}
            self.log("error", code=error.get("code"), message=error.get("message"))

    async def say(self, turn: ScheduledTurn) -> bool:
        """Hand a user turn to this session; False if it is not connected (the turn is lost)."""
        websocket = self.websocket
        if not self.running or websocket is None:
            return False
        try:
            if turn.mode == "text":
                await websocket.send(json.dumps(create_item(message_item("user", turn.say))))
                await websocket.send(json.dumps({"type": "response.create"}))
            else:  # server VAD commits and answers
                pcm = utterance(turn.say, self.env.seed)
                await stream_utterance(pcm, lambda chunk: websocket.send(json.dumps(append_event(chunk))))
        except websockets.ConnectionClosed:
            return False
        return True

    async def cleanup(self) -> None:
        """The app's cleanup(): stop, then close the WebSocket, ignoring every error."""
        self.running = False
        if self.websocket is not None:
            with contextlib.suppress(Exception):
                await self.websocket.close()


class NaiveApp:
    """The app's `main()` with its microphone: the restart loop, and turns spoken into whatever is live."""

    def __init__(self, env: ClientEnv, log: JsonLog) -> None:
        self.env, self.log = env, log
        self.scale = env.knob("RTSIM_NAIVE_DELAY_SCALE", 1.0)
        self.agent: NaiveAgent | None = None
        self.loop = asyncio.get_running_loop()
        self.end = self.loop.time() + env.scenario.end_at

    async def microphone(self, schedule: TurnSchedule) -> None:
        async for turn in schedule.play():
            agent = self.agent
            self.log("turn_due", turn=turn.index, mode=turn.mode)
            if agent is not None and await agent.say(turn):
                self.log("turn_sent", turn=turn.index, mode=turn.mode, text=turn.say)
            else:
                self.log("turn_lost", turn=turn.index, reason="no live session")

    async def main(self) -> int:
        scenario = self.env.scenario
        schedule = TurnSchedule.for_scenario(scenario, self.loop.time())
        mic = asyncio.create_task(self.microphone(schedule))
        reconnect_count = 0
        try:
            while True:
                if reconnect_count:
                    self.log("reconnecting", attempt=reconnect_count + 1)
                ava = self.agent = NaiveAgent(self.env, self.log)
                run = asyncio.create_task(ava.run())
                try:
                    done, _ = await asyncio.wait({run}, timeout=max(0.0, self.end - self.loop.time()))
                    if not done:  # end_at: the user's Ctrl+C
                        run.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await run
                        await ava.cleanup()
                        self.log("closed", code=1000)
                        break
                    run.result()
                    break  # run() returned: a clean shutdown
                except websockets.ConnectionClosedOK as exc:
                    self.log("session_expired", code=exc.rcvd.code if exc.rcvd else None, delay=3)
                    await ava.cleanup()
                    await self.sleep(SESSION_EXPIRED_DELAY)
                except websockets.ConnectionClosedError as exc:
                    self.log("connection_lost", code=exc.rcvd.code if exc.rcvd else 1006, delay=5)
                    await ava.cleanup()
                    await self.sleep(CONNECTION_LOST_DELAY)
                except Exception as exc:
                    self.log("unexpected_error", error=repr(exc)[:200], delay=10)
                    await ava.cleanup()
                    await self.sleep(OTHER_ERROR_DELAY)
                if self.loop.time() >= self.end:
                    break
                reconnect_count += 1
        finally:
            mic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mic
        self.log("exit", code=EXIT_OK, reconnects=reconnect_count)
        return EXIT_OK

    async def sleep(self, seconds: float) -> None:
        """The fixed delay (scaled for tests); the user may quit meanwhile."""
        self.agent = None
        await asyncio.sleep(max(0.0, min(seconds * self.scale, self.end - self.loop.time())))


async def main(env: Mapping[str, str], *, out: TextIO | None = None) -> int:
    log = JsonLog(CLIENT, out)
    try:
        app = NaiveApp(ClientEnv.from_env(env), log)
    except UsageError as exc:
        log("usage_error", message=str(exc))
        return EXIT_USAGE
    return await app.main()


if __name__ == "__main__":
    run_cli(main)
