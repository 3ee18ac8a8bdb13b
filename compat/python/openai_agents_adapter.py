"""openai-agents for Python (`agents.realtime`), as its docs set it up: a RealtimeAgent, a RealtimeRunner,
`runner.run(model_config={"url": ..., "api_key": ...})`, typed turns with `send_message` and voice with
`send_audio`. The framework keeps one WebSocket for the session: it has no reconnect of its own (0.24.0).
"""

from __future__ import annotations

import asyncio

from agents.realtime import RealtimeAgent, RealtimeRunner
from scenario import EXIT_FATAL, EXIT_OK, Log, Turn, load, play_turns, reply_text, run, stream_audio


async def main() -> int:
    scenario = load()
    log = Log("openai-agents")
    agent = RealtimeAgent(name="Assistant", instructions=scenario.instructions or "Be brief.")
    runner = RealtimeRunner(agent)
    alive = True
    try:
        session = await runner.run(model_config={"url": scenario.realtime_url, "api_key": scenario.api_key})
    except Exception as exc:
        log("fatal", error=repr(exc)[:300])
        return EXIT_FATAL

    async with session:

        async def listen() -> None:
            nonlocal alive
            try:
                async for event in session:
                    if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                        raw = event.data.data
                        if raw.get("type") == "session.created":
                            log("connected", session=raw["session"]["id"])
                        elif raw.get("type") == "response.done":
                            response = raw["response"]
                            log("reply", status=response.get("status"), text=reply_text(response))
                    elif event.type == "error":
                        log("error", error=str(event.error)[:300])
            except Exception as exc:
                log("session_failed", error=repr(exc)[:300])
            alive = False
            log("session_ended")

        listener = asyncio.create_task(listen())

        async def say(turn: Turn) -> None:
            if not alive:
                return  # nobody is listening any more: the turn is lost
            try:
                if turn.mode == "audio":
                    await stream_audio(turn.audio(), session.send_audio)
                else:
                    await session.send_message(turn.say)
            except Exception as exc:
                log("send_failed", turn=turn.index, error=repr(exc)[:300])

        await play_turns(scenario, log, say)
        ok = alive and not listener.done()
        listener.cancel()
    log("exit", code=EXIT_OK if ok else EXIT_FATAL)
    return EXIT_OK if ok else EXIT_FATAL


if __name__ == "__main__":
    run(main)
