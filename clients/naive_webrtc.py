"""A deliberately naive Realtime client over WebRTC: the app that trusts the stack to say when it is dead.

It has no watchdog, no setup timeout and no context restore. It reconnects only when aiortc itself reports the
peer connection `failed` or `closed` — which, for a path that silently goes dead, happens when ICE consent
freshness gives up: six unanswered checks ~5 s apart, ~30 s of dead air. It ignores a closed data channel
(aiortc keeps the connection `connected`), so it sits deaf on a call whose channel was aborted. The scenarios
use it as the foil for `clients.reference_webrtc`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from rtsim.clients.common import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_USAGE,
    ClientEnv,
    JsonLog,
    TurnSchedule,
    UsageError,
    run_cli,
)
from rtsim.clients.webrtc_call import CallAbandoned, ClientCall, mint_token, reply_text, sleep_until

CLIENT = "naive-webrtc"


@dataclass
class NaiveWebRTCClient:
    base_url: str
    api_key: str
    session: dict[str, Any] | None = None
    noticed: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, what it saw)

    def __post_init__(self) -> None:
        self.call: ClientCall | None = None
        self.calls: list[ClientCall] = []
        self._started = time.monotonic()
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    async def start(self) -> None:
        self._started = time.monotonic()
        await self._connect()

    async def _connect(self) -> None:
        token = await mint_token(self.base_url, self.api_key, session=self.session)
        call = ClientCall(self.base_url, token["value"])
        self.calls.append(call)
        call.pc.on("connectionstatechange", lambda: self._on_state(call))
        await call.connect(open_timeout=None)  # however long it takes
        self.call = call

    def _on_state(self, call: ClientCall) -> None:
        state = call.pc.connectionState
        if self._closing or call is not self.call or self._reconnecting is not None:
            return
        if state in ("failed", "closed"):
            self.noticed.append((round(self.elapsed(), 3), f"connection {state}"))
            self._reconnecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await self._connect()  # a new session: whatever was said before is gone
        except Exception as exc:  # naive: note it and stay down
            self.noticed.append((round(self.elapsed(), 3), f"reconnect failed: {exc!r}"))
        finally:
            self._reconnecting = None

    async def ask(self, text: str, timeout: float = 30.0) -> str:
        assert self.call is not None
        call = self.call
        mark = len(call.received)
        call.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
        call.send({"type": "response.create"})
        return reply_text(await call.wait_for("response.done", since=mark, timeout=timeout))

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for call in self.calls:
            await call.close()


async def main(env: Mapping[str, str], *, out: TextIO | None = None) -> int:
    """`python -m rtsim.clients.naive_webrtc`: typed turns at their times; a dead call just loses them."""
    log = JsonLog(CLIENT, out)
    try:
        client_env = ClientEnv.from_env(env)
    except UsageError as exc:
        log("usage_error", message=str(exc))
        return EXIT_USAGE
    scenario = client_env.scenario
    session = {**scenario.session_config(), "model": scenario.model}
    client = NaiveWebRTCClient(client_env.base_url, client_env.api_key, session)
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = EXIT_OK
    try:
        await client.start()
        schedule = TurnSchedule(tuple(t for t in scenario.turns if t.at <= scenario.end_at), started)
        async for turn in schedule.play():
            remaining = started + scenario.end_at - loop.time()
            log("turn_sent", turn=turn.index, mode="text", text=turn.say)
            try:
                reply = await client.ask(turn.say, timeout=max(remaining, 0.1))
                log("reply", turn=turn.index, status="completed", text=reply)
            except (
                TimeoutError,
                CallAbandoned,
                Exception,
            ) as exc:  # naive: whatever it was, the turn is gone
                log("turn_lost", turn=turn.index, reason=repr(exc))
        await sleep_until(started + scenario.end_at)
    except (ConnectionError, OSError) as exc:
        log("fatal", reason=str(exc))
        code = EXIT_FATAL
    finally:
        await client.close()
    log("exit", code=code, noticed=client.noticed)
    return code


if __name__ == "__main__":
    run_cli(main)
