"""pipecat as a headless pipeline: user context aggregator → keyboard → `OpenAIRealtimeLLMService(base_url=
...)` → observer → assistant aggregator, run by a WorkerRunner with no transport. Voice goes in as
`InputAudioRawFrame`s at 24 kHz (server VAD decides when the user stopped). Typed turns enter as
`LLMMessagesAppendFrame(run_llm=True)` after the user aggregator, where the service's own docs send them: it
puts them into the conversation and the assistant aggregator asks for the response. What pipecat does after a
disconnect is its own.
"""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner
from scenario import EXIT_OK, SAMPLE_RATE, Log, Turn, load, play_turns, run, stream_audio


class Keyboard(FrameProcessor):
    """Where the app types into the pipeline: frames it sends go on downstream to the service."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

    async def type(self, frame: Frame) -> None:
        await self.push_frame(frame, FrameDirection.DOWNSTREAM)


class Replies(FrameProcessor):
    """Logs what the bot said (one line per response) and errors; passes every frame on."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log
        self.text: dict[type, list[str]] = {LLMTextFrame: [], TTSTextFrame: []}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame | TTSTextFrame):  # text output, or the spoken reply's transcript
            self.text[type(frame)].append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            pieces = self.text[LLMTextFrame] or self.text[TTSTextFrame]
            self.log("reply", text="".join(pieces).strip())
            self.text = {LLMTextFrame: [], TTSTextFrame: []}
        elif isinstance(frame, ErrorFrame):
            self.log("error", error=str(frame.error)[:300])
        await self.push_frame(frame, direction)


async def main() -> int:
    scenario = load()
    log = Log("pipecat")
    base = scenario.realtime_url.split("?", 1)[0]  # the service appends ?model= itself
    llm = OpenAIRealtimeLLMService(
        api_key=scenario.api_key,
        base_url=base,
        settings=OpenAIRealtimeLLMService.Settings(model=scenario.model),
    )
    context = LLMContext([{"role": "system", "content": scenario.instructions or "Be brief."}])
    aggregators = LLMContextAggregatorPair(context)
    keyboard = Keyboard()
    pipeline = Pipeline([aggregators.user(), keyboard, llm, Replies(log), aggregators.assistant()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())

    async def say(turn: Turn) -> None:
        if turn.mode == "audio":

            async def send(chunk: bytes) -> None:
                frame = InputAudioRawFrame(audio=chunk, sample_rate=SAMPLE_RATE, num_channels=1)
                await worker.queue_frame(frame)

            await stream_audio(turn.audio(), send)
        else:
            message = {"role": "user", "content": turn.say}
            await keyboard.type(LLMMessagesAppendFrame(messages=[message], run_llm=True))

    await asyncio.sleep(0.2)
    await play_turns(scenario, log, say)
    await worker.stop_when_done()
    try:
        await asyncio.wait_for(running, 10)
    except TimeoutError:
        await worker.cancel(reason="the run is over")
    log("exit", code=EXIT_OK)
    return EXIT_OK


if __name__ == "__main__":
    run(main)
