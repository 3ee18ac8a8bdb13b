"""livekit-agents with livekit-plugins-openai, headless: an `AgentSession(llm=openai.realtime.RealtimeModel(
base_url=...))` started with no room (so no LiveKit server), a microphone `AudioInput` fed 20 ms frames of the
turn's voice, typed turns through `generate_reply(user_input=...)`. Recovery is the plugin's own.
"""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice import io
from livekit.plugins import openai
from scenario import (
    CHUNK_BYTES,
    EXIT_FATAL,
    EXIT_OK,
    SAMPLE_RATE,
    Log,
    Turn,
    load,
    play_turns,
    run,
    stream_audio,
)

SILENCE = bytes(CHUNK_BYTES)


class Microphone(io.AudioInput):
    """The user's microphone: a frame every 20 ms, as a real one delivers — the turn's voice when the user
    speaks, silence otherwise (so semantic VAD, which livekit configures, hears the user stop)."""

    def __init__(self) -> None:
        super().__init__(label="rtsim-microphone")
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.next_at: float | None = None

    async def __anext__(self) -> rtc.AudioFrame:
        loop = asyncio.get_running_loop()
        self.next_at = (self.next_at or loop.time()) + 0.02
        await asyncio.sleep(max(0.0, self.next_at - loop.time()))
        chunk = self.frames.get_nowait() if not self.frames.empty() else SILENCE
        return rtc.AudioFrame(chunk, SAMPLE_RATE, 1, len(chunk) // 2)

    async def say(self, chunk: bytes) -> None:
        self.frames.put_nowait(chunk.ljust(CHUNK_BYTES, b"\0"))


async def main() -> int:
    scenario = load()
    log = Log("livekit")
    model = openai.realtime.RealtimeModel(
        model=scenario.model, base_url=scenario.base_url, api_key=scenario.api_key
    )
    session: AgentSession = AgentSession(llm=model)
    microphone = Microphone()
    session.input.audio = microphone
    closed = asyncio.Event()

    @session.on("conversation_item_added")
    def _added(event) -> None:  # type: ignore[no-untyped-def]
        item = event.item
        if getattr(item, "role", None) == "assistant":
            log("reply", text=item.text_content)

    @session.on("error")
    def _error(event) -> None:  # type: ignore[no-untyped-def]
        log("error", error=repr(event.error)[:300])

    @session.on("close")
    def _close(event) -> None:  # type: ignore[no-untyped-def]
        error = getattr(event, "error", None)
        log("session_closed", reason=str(getattr(event, "reason", "")), error=repr(error))
        closed.set()

    try:
        await session.start(agent=Agent(instructions=scenario.instructions or "Be brief."))
    except Exception as exc:
        log("fatal", error=repr(exc)[:300])
        return EXIT_FATAL
    log("connected")

    async def say(turn: Turn) -> None:
        if closed.is_set():
            return  # the session ended: the turn is lost
        if turn.mode == "audio":
            await stream_audio(turn.audio(), microphone.say)
        else:
            session.generate_reply(user_input=turn.say)

    await play_turns(scenario, log, say)
    ok = not closed.is_set()
    await session.aclose()
    log("exit", code=EXIT_OK if ok else EXIT_FATAL)
    return EXIT_OK if ok else EXIT_FATAL


if __name__ == "__main__":
    run(main)
