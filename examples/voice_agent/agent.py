"""A small voice agent on the official `openai` SDK — the app a user would test with rtsim's pytest plugin.

    OPENAI_API_KEY=... python agent.py "My name is Alice." "What is my name?"

It opens one Realtime connection (`client.realtime.connect`), says each user line (a real agent would stream
microphone audio; text keeps the sample short), and prints what the model answers, one JSON object a line.

As written in most apps it has NO reconnect logic: the first dropped connection ends it. Switch it on with
`--reconnect` or `VOICE_AGENT_RECONNECT=1`, and it uses the SDK's own `on_reconnecting=` path (the SDK
reconnects and queues what is sent meanwhile) plus what the SDK leaves to the app: the new session knows
nothing, so the agent puts its instructions and the conversation so far back, then asks again a question
whose answer the drop cut off.

Under a test harness the user's lines come from `RTSIM_SCENARIO` (rtsim's client contract: a JSON file of
`turns` with `at` times and `end_at`); `OPENAI_BASE_URL` points the SDK at the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from openai.types.websocket_reconnection import ReconnectingEvent, ReconnectingOverrides

INSTRUCTIONS = "You are a friendly voice assistant. Keep answers short."
MODEL = "gpt-realtime"
GRACE_S = 1.5  # after the last line, time for its answer before the agent hangs up


@dataclass(frozen=True)
class Line:
    at: float  # seconds after start
    text: str


@dataclass
class Plan:
    lines: list[Line]
    end_at: float
    model: str = MODEL
    instructions: str = INSTRUCTIONS

    @classmethod
    def from_scenario(cls, path: str) -> Plan:
        document = json.loads(Path(path).read_text())
        lines = [Line(float(t["at"]), t["say"]) for t in document.get("turns", [])]
        return cls(
            lines,
            float(document.get("end_at", 10)),
            document.get("model", MODEL),
            document.get("instructions") or INSTRUCTIONS,
        )

    @classmethod
    def from_texts(cls, texts: list[str], spacing: float = 3.0) -> Plan:
        lines = [Line(0.3 + spacing * i, text) for i, text in enumerate(texts)]
        return cls(lines, (lines[-1].at if lines else 0) + spacing)


def say(what: str, **fields: Any) -> None:
    print(json.dumps({"agent": what, **fields}), flush=True)


@dataclass
class VoiceAgent:
    plan: Plan
    reconnect: bool = False
    # The conversation as the app remembers it: (role, text) of every completed exchange.
    memory: list[tuple[str, str]] = field(default_factory=list)
    pending: str | None = None  # a user line whose answer has not completed yet
    sessions: int = 0

    def on_reconnecting(self, event: ReconnectingEvent) -> ReconnectingOverrides | None:
        say("reconnecting", attempt=event.attempt, close_code=event.close_code)
        return None

    async def run(self, base_url: str | None, api_key: str | None) -> int:
        client = AsyncOpenAI(base_url=base_url, api_key=api_key)
        options: dict[str, Any] = {"on_reconnecting": self.on_reconnecting} if self.reconnect else {}
        started = asyncio.get_running_loop().time()
        try:
            async with client.realtime.connect(model=self.plan.model, **options) as connection:
                await connection.session.update(session=self.session_config())  # type: ignore[arg-type]
                speaker = asyncio.create_task(self.speak(connection, started))
                listener = asyncio.create_task(self.listen(connection))
                remaining = self.plan.end_at + GRACE_S - (asyncio.get_running_loop().time() - started)
                done, _ = await asyncio.wait({listener}, timeout=max(0.0, remaining))
                speaker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await speaker
                if done:
                    listener.result()  # the connection ended for good: raise why
                    return 1
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
                say("goodbye")
                return 0
        except Exception as exc:
            say("connection lost", error=repr(exc)[:200])
            return 1
        finally:
            await client.close()

    def session_config(self) -> dict[str, Any]:
        return {"type": "realtime", "instructions": self.plan.instructions}

    async def speak(self, connection: Any, started: float) -> None:
        loop = asyncio.get_running_loop()
        for line in self.plan.lines:
            await asyncio.sleep(max(0.0, started + line.at - loop.time()))
            self.pending = line.text
            await self.ask(connection, line.text)
            say("user said", text=line.text)

    async def ask(self, connection: Any, text: str) -> None:
        await connection.conversation.item.create(item=message("user", text))
        await connection.response.create()

    async def listen(self, connection: Any) -> None:
        async for event in connection:
            if event.type == "session.created":
                self.sessions += 1
                if self.sessions > 1:
                    await self.restore(connection)
            elif event.type == "response.done":
                text = reply_text(event.response.model_dump())
                if event.response.status == "completed" and self.pending is not None:
                    self.memory += [("user", self.pending), ("assistant", text)]
                    self.pending = None
                say("assistant", text=text, status=event.response.status)

    async def restore(self, connection: Any) -> None:
        """A new session after a reconnect: give it what the old one knew, then re-ask a cut-off question."""
        await connection.session.update(session=self.session_config())  # type: ignore[arg-type]
        for role, text in self.memory:
            await connection.conversation.item.create(item=message(role, text))
        say("context restored", items=len(self.memory))
        if self.pending is not None:
            await self.ask(connection, self.pending)


def message(role: str, text: str) -> dict[str, Any]:
    # A replayed answer is the assistant's `output_text`; user (and system) text is `input_text`.
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def reply_text(response: dict[str, Any]) -> str:
    return " ".join(
        part.get("transcript") or part.get("text") or ""
        for item in response.get("output") or []
        for part in item.get("content") or []
    ).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lines", nargs="*", help="what the user says, one line every 3 s")
    parser.add_argument(
        "--reconnect",
        action="store_true",
        default=os.environ.get("VOICE_AGENT_RECONNECT", "") not in ("", "0"),
        help="reconnect and restore the conversation after a dropped connection (VOICE_AGENT_RECONNECT=1)",
    )
    args = parser.parse_args(argv)
    scenario = os.environ.get("RTSIM_SCENARIO")
    plan = Plan.from_scenario(scenario) if scenario else Plan.from_texts(args.lines or ["Hello!"])
    agent = VoiceAgent(plan, reconnect=args.reconnect)
    return asyncio.run(agent.run(os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY")))


if __name__ == "__main__":
    sys.exit(main())
