"""openai-agents-python's streamed speech-to-text (`OpenAISTTModel.create_session`), a real client of
transcription sessions, against rtsim over a loopback socket: it connects with `?intent=transcription`,
waits for `session.created`, sends `session.update` of type transcription (semantic VAD), streams audio and
yields each `conversation.item.input_audio_transcription.completed` transcript as a turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from agents import set_tracing_disabled
from agents.voice import StreamedAudioInput, STTModelSettings
from agents.voice.models.openai_stt import OpenAISTTModel
from openai import AsyncOpenAI

from rtsim.simulator import audio
from tests.support.wire import KEY


async def test_the_agents_sdk_stt_session_transcribes_turns_from_rtsim(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    set_tracing_disabled(True)  # the SDK would export traces to the real service
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump({"transcripts": ["My name is Alice.", "I live in Paris."]}))
    server = await server_factory(pacing=0.0, script=str(script))
    model = OpenAISTTModel("gpt-4o-transcribe", AsyncOpenAI(base_url=server.base_url, api_key=KEY))
    stream = StreamedAudioInput()
    session = await model.create_session(stream, STTModelSettings(), False, False)
    spoken = audio.build_utterance(
        [("silence", 300), ("speech", 900), ("silence", 1500), ("speech", 900), ("silence", 1500)], seed=4
    ).pcm
    await stream.add_audio(np.frombuffer(spoken, dtype=np.int16))
    turns: list[str] = []

    async def collect() -> None:
        async for turn in session.transcribe_turns():
            turns.append(turn)
            if len(turns) == 2:
                return

    try:
        await asyncio.wait_for(collect(), timeout=20)
    finally:
        await session.close()
    # each turn's transcript, in the order they complete (transcription latency may differ per turn)
    assert sorted(turns) == ["I live in Paris.", "My name is Alice."]
    assert [s for s in server.history.records if s.get("kind") == "session"]  # it really went over the wire
