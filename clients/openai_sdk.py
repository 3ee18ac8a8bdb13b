"""The official SDK's own path, as users run it: `AsyncOpenAI().realtime.connect(model, on_reconnecting)`.

Written the way the SDK's README and examples do it, with the one resilience feature the SDK offers switched
on: passing `on_reconnecting` enables its reconnect (openai 3.5x, `openai/_websocket_connection.py`):

- it reconnects on close codes 1001, 1005, 1006, 1011, 1012, 1013, 1015 (anything without a close frame counts
  as 1006), waiting min(0.5·2^(n-1), 8) × U[0.75, 1) s, at most 5 tries, the count reset by any non-error
  event; 1000, 1008, 3000 and every other code end the connection;
- events sent meanwhile are queued (up to 1 MiB) and flushed on the new connection;
- the new connection is a new session on the same URL with the same API key: no context restore, and not even
  the `session.update` this client sent once after connecting (instructions and tools are gone too). Restoring
  them is the application's job, and this client — like the SDK's examples — does not do it;
- it has no rotation before the session cap (the cap's 1001 is simply reconnected, with the context lost), no
  watchdog beyond websockets' default keepalive (20 s ping, 20 s timeout), no ephemeral tokens, no barge-in.

The initial connection is not retried by the SDK: a refused handshake ends the run (exit 1), as does the
connection ending for good before `end_at` (a non-recoverable close, or the five tries used up).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Mapping
from typing import Any, TextIO

from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.websocket_reconnection import ReconnectingEvent, ReconnectingOverrides
from websockets.exceptions import ConnectionClosed

from rtsim.clients.common import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_USAGE,
    ClientEnv,
    JsonLog,
    ScheduledTurn,
    TurnSchedule,
    UsageError,
    message_item,
    response_text,
    run_cli,
    stream_utterance,
    utterance,
)

CLIENT = "openai_sdk"


class SdkClient:
    def __init__(self, env: ClientEnv, log: JsonLog) -> None:
        self.env, self.log = env, log
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.end = self.started + env.scenario.end_at

    def on_reconnecting(self, event: ReconnectingEvent) -> ReconnectingOverrides | None:
        self.log(
            "reconnecting",
            attempt=event.attempt,
            max_attempts=event.max_attempts,
            delay=round(event.delay, 3),
            close_code=event.close_code,
        )
        return None  # reconnect as the SDK decides, to the same URL with the same headers

    async def run(self) -> int:
        scenario = self.env.scenario
        # Over TLS the SDK is handed the context that trusts the simulator's CA, as an app would hand it its
        # own: the REST client through `http_client`, the WebSocket through websockets' `ssl` option.
        context = self.env.tls_context
        http_client = DefaultAsyncHttpxClient(verify=context) if context is not None else None
        websocket_options: dict[str, Any] = {"ssl": context} if context is not None else {}
        client = AsyncOpenAI(base_url=self.env.base_url, api_key=self.env.api_key, http_client=http_client)
        try:
            async with client.realtime.connect(
                model=scenario.model,
                on_reconnecting=self.on_reconnecting,
                websocket_connection_options=websocket_options,  # type: ignore[arg-type]
            ) as connection:
                self.log("connected")
                await connection.session.update(session=scenario.session_config())  # type: ignore[arg-type]
                return await self.converse(connection)
        except Exception as exc:  # a refused handshake, or the SDK raising what it gave up on
            self.log("fatal", error=repr(exc)[:300])
            return EXIT_FATAL
        finally:
            await client.close()

    async def converse(self, connection: AsyncRealtimeConnection) -> int:
        schedule = TurnSchedule.for_scenario(self.env.scenario, self.started)
        listener = asyncio.create_task(self.listen(connection))
        speaker = asyncio.create_task(self.speak(connection, schedule))
        try:
            done, _ = await asyncio.wait({listener}, timeout=max(0.0, self.end - self.loop.time()))
            if done:  # the SDK stopped reconnecting before the user was done
                error = listener.exception()
                self.log("fatal", error=repr(error)[:300] if error else "the connection ended")
                return EXIT_FATAL
            await connection.close()  # code 1000
            self.log("closed", code=1000)
            return EXIT_OK
        finally:
            for task in (speaker, listener):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def listen(self, connection: AsyncRealtimeConnection) -> None:
        async for event in connection:
            data: dict[str, Any] = event.model_dump()
            kind = data.get("type")
            if kind == "session.created":
                self.log("session", session=data["session"].get("id"))
            elif kind == "response.done":
                response = data.get("response") or {}
                self.log("reply", status=response.get("status"), text=response_text(response))
            elif kind == "error":
                error = data.get("error") or {}
                self.log("error", code=error.get("code"), message=error.get("message"))

    async def speak(self, connection: AsyncRealtimeConnection, schedule: TurnSchedule) -> None:
        async for turn in schedule.play():
            try:
                await self.say(connection, turn)
            except ConnectionClosed as exc:  # sent between a drop and the SDK noticing it: gone
                self.log("turn_lost", turn=turn.index, error=repr(exc)[:200])
                continue
            self.log("turn_sent", turn=turn.index, mode=turn.mode, text=turn.say)

    async def say(self, connection: AsyncRealtimeConnection, turn: ScheduledTurn) -> None:
        if turn.mode == "text":
            await connection.conversation.item.create(item=message_item("user", turn.say))  # type: ignore[arg-type]
            await connection.response.create()
            return

        async def append(chunk: bytes) -> None:
            await connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())

        await stream_utterance(utterance(turn.say, self.env.seed), append)


async def main(env: Mapping[str, str], *, out: TextIO | None = None) -> int:
    log = JsonLog(CLIENT, out)
    try:
        client = SdkClient(ClientEnv.from_env(env), log)
    except UsageError as exc:
        log("usage_error", message=str(exc))
        return EXIT_USAGE
    code = await client.run()
    log("exit", code=code)
    return code


if __name__ == "__main__":
    run_cli(main)
