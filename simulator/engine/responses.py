"""Responses: creation (config, context, the model's reply), paced delivery, cancel and finish, usage.

A response's delivery is a generator: it emits events between yields and yields the monotonic time at
which it wants to continue. Pacing, cancellation (client or barge-in) and session expiry are then plain
state: `run_due` steps what is due, and closing the generator stops a response wherever it is.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import cachetools
import numpy as np

from .. import audio, session_config
from ..model import Reply, count_tokens, item_text
from ..protocol import RealtimeError
from ..schema import AnyValue, Bool, Enum, List, Obj, OneOf, Spec, Str
from .conversation import Conversation, Item, audio_tokens, item_tokens
from .mcp import McpServers
from .state import BYTES_PER_MS, SessionState, snapshot, word_pieces

# Speech up to this long (~230 characters) is synthesised in one piece (~20 ms once, then cached); a longer
# reply is synthesised segment by segment as delivery reaches it, so no step holds the event loop for long.
WHOLE_SPEECH_MAX_MS = 15000
SPEECH_SEGMENT_MS = 3000
# Out-of-band responses (`conversation: "none"`) in progress at once, per session: each holds a delivery, so
# an unbounded number is unbounded memory and work.
MAX_OUT_OF_BAND_RESPONSES = 8
# A synthesised piece of speech in its output format and as the base64 payloads of its deltas, per (text,
# format, voice seed, chunk size): a load test's repeated replies are converted and encoded once, not once
# per session and chunk. Bounded in bytes (audio plus base64).
SPEECH_CHUNK_CACHE_BYTES = 64 * 1024 * 1024
SpeechChunks = tuple[bytes, tuple[str, ...], tuple[str, ...]]  # audio, its deltas' base64, the text pieces
_speech_chunk_cache: cachetools.LRUCache[tuple[str, str, int, int], SpeechChunks] = cachetools.LRUCache(
    maxsize=SPEECH_CHUNK_CACHE_BYTES,
    getsizeof=lambda entry: max(1, len(entry[0]) + sum(len(d) for d in entry[1]) + len(entry[0]) // 100),
)

# `response.create` parameters on a GA session: the fields of the SDK's `RealtimeResponseCreateParamsParam`.
# Null means "not given" on every optional field: livekit-agents sends `"instructions": null` on each reply
# without instructions and works against the real service.
GA_RESPONSE_FIELDS: dict[str, Spec] = {
    "conversation": OneOf((Enum(("auto", "none")), Str())),
    "output_modalities": session_config.OUTPUT_MODALITIES,
    "instructions": Str(),
    "audio": Obj({"output": Obj({"format": session_config.AUDIO_FORMAT, "voice": session_config.VOICE})}),
    "tools": session_config.TOOLS,
    "tool_choice": session_config.TOOL_CHOICE,
    "max_output_tokens": session_config.MAX_OUTPUT_TOKENS,
    "metadata": AnyValue(),
    "prompt": AnyValue(),
    "input": List(AnyValue()),
    "parallel_tool_calls": Bool(),
    "reasoning": session_config.REASONING,
}
RESPONSE_PARAMS = Obj(GA_RESPONSE_FIELDS, null_is_absent=True)
# A beta session also takes the beta names; on a GA session they are unknown parameters, as the real GA
# endpoint answers ("Unknown parameter: 'response.modalities'.").
BETA_RESPONSE_PARAMS = Obj(
    {
        **GA_RESPONSE_FIELDS,
        "modalities": session_config.MODALITIES,
        "voice": session_config.VOICE,
        "output_audio_format": session_config.BETA_FORMAT,
        "temperature": AnyValue(),
        "max_response_output_tokens": session_config.MAX_OUTPUT_TOKENS,
    },
    null_is_absent=True,
)


@dataclass
class Output:
    """One output item of a response, with how far its delivery got (what a cancel must close)."""

    item: dict[str, Any]
    kind: Literal["audio", "text", "function_call", "mcp_call", "mcp_approval_request"]
    sent_text: str = ""
    audio_ms: int = 0
    part_open: bool = False


@dataclass
class ResponseRun:
    id: str
    in_conversation: bool
    modality: str
    config: dict[str, Any]
    reply: Reply
    input_tokens: int
    created_at: float
    metadata: dict[str, Any] | None = None
    outputs: list[Output] = field(default_factory=list)
    steps: Generator[float, None, None] | None = None
    next_due: float = 0.0
    truncated: bool = False  # the reply was cut at max_output_tokens: the response ends `incomplete`
    cached_text_tokens: int = 0  # input tokens of the prompt prefix an earlier response already saw
    cached_audio_tokens: int = 0

    @property
    def current(self) -> Output | None:
        return self.outputs[-1] if self.outputs else None

    @property
    def has_output(self) -> bool:
        """Something was delivered: an audio message counts once its first audio is out."""
        current = self.current
        return current is not None and (current.kind != "audio" or current.audio_ms > 0)


class Responder:
    """The session's responses in progress: at most one in the conversation, any number out of band."""

    def __init__(self, state: SessionState, conversation: Conversation, *, audio_seed: int) -> None:
        self.state = state
        self.conversation = conversation
        self.audio_seed = audio_seed
        self.runs: list[ResponseRun] = []
        self.count = 0  # responses created so far: the model's `response_index`
        # A transport that carries audio out of band (WebRTC's track) takes the model's pcm16 here instead
        # of `response.output_audio.delta` events: sink(response_id, item_id, pcm16_chunk).
        self.audio_sink: Callable[[str, str, bytes], None] | None = None
        self.assistant_audio_present = False  # the voice is fixed once the model has spoken
        self.pending_server_error: RealtimeError | None = None
        self.on_finished: Callable[[], None] = lambda: None  # called as each response ends, before its done
        # The prompt prefix the last in-conversation response saw (instructions, then (item id, tokens)):
        # what the next one finds cached.
        self.seen_prompt: tuple[str, list[tuple[str, int]]] | None = None
        self.mcp = McpServers(state, conversation)

    @property
    def active(self) -> ResponseRun | None:
        return next((run for run in self.runs if run.in_conversation), None)

    # ---- stepping ----------------------------------------------------------------------------------

    def run_due(self, now: float) -> None:
        """Run every response step due by `now`; a pending server error fails the first with output."""
        state = self.state
        budget = state.limits.steps_per_advance
        for run in list(self.runs):
            while run.steps is not None and run.next_due <= now and state.close_request is None:
                if budget <= 0:
                    return  # still due: the next advance goes on from here
                budget -= 1
                try:
                    run.next_due = next(run.steps)
                except StopIteration:
                    run.steps = None
                    state.last_activity = now
                    if self.pending_server_error is None or not run.has_output:
                        if run.truncated:
                            details = {"type": "incomplete", "reason": "max_output_tokens"}
                            self._finish(run, "incomplete", details)
                        else:
                            self._finish(run, "completed", None)
                        continue
                if self.pending_server_error is not None and run.has_output:
                    error, self.pending_server_error = self.pending_server_error, None
                    self.fail(run, error)

    def cut_off(self) -> None:
        """Stop every response where it is, without closing events (the real server just ends)."""
        for run in self.runs:
            if run.steps is not None:
                run.steps.close()
                run.steps = None
        self.runs.clear()

    # ---- client events -----------------------------------------------------------------------------

    def on_create(self, event: dict[str, Any], now: float) -> None:
        self.create(event.get("response") or {}, now)

    def on_cancel(self, event: dict[str, Any], now: float) -> None:
        wanted = event.get("response_id")
        run = next((r for r in self.runs if r.id == wanted), None) if wanted else self.active
        if run is None:
            raise RealtimeError(
                "Cancellation failed: no active response found.", code="response_cancel_not_active"
            )
        self._finish(run, "cancelled", {"type": "cancelled", "reason": "client_cancelled"})

    # ---- lifecycle ---------------------------------------------------------------------------------

    def create(self, params: dict[str, Any], now: float) -> ResponseRun:
        in_conversation = params.get("conversation", "auto") != "none"
        active = self.active
        if in_conversation and active is not None:
            raise RealtimeError(
                f"Conversation already has an active response in progress: {active.id}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        if (
            not in_conversation
            and sum(not run.in_conversation for run in self.runs) >= MAX_OUT_OF_BAND_RESPONSES
        ):
            raise RealtimeError(
                f"Too many out-of-band responses in progress: at most {MAX_OUT_OF_BAND_RESPONSES} at once. "
                "Wait until one is finished before creating another.",
                code="too_many_active_responses",
            )
        config = self._config(params)
        instructions = config["instructions"]
        tools = config["tools"]
        if "tools" in params:  # a response's own MCP servers are listed as it starts
            self.mcp.check(tools, param="response.tools")
            self.mcp.configure(tools, now)
        if "input" in params:
            visible = [self._input_item(raw, i) for i, raw in enumerate(params["input"])]
        else:
            visible = self.conversation.context_window(instructions)
        context = [item.data for item in visible]
        reply = self.state.model.reply(
            context,
            instructions=instructions,
            tools=tools,
            response_index=self.count,
            mcp_tools=self.mcp.available(tools),
        )
        self.count += 1
        input_tokens = count_tokens(instructions) + sum(item.tokens for item in visible)
        run = ResponseRun(
            id=self.state.ids.new("resp"),
            in_conversation=in_conversation,
            modality=session_config.output_modality(config),
            config=config,
            reply=reply,
            input_tokens=input_tokens,
            created_at=now,
            metadata=params.get("metadata"),
        )
        if in_conversation:
            self._count_cached(run, instructions, visible)
        self.runs.append(run)
        self.state.emit({"type": "response.created", "response": self._response_object(run, "in_progress")})
        run.steps = self._deliver(run)
        run.next_due = now + self.state.limits.response_latency
        return run

    def _count_cached(self, run: ResponseRun, instructions: str, visible: list[Item]) -> None:
        """Prompt caching: the prefix of this prompt that the previous response's prompt began with (the
        same instructions, then the same items unchanged) is billed as cached, so from the second turn on."""
        prompt = [(item.id, item.tokens) for item in visible]
        seen, self.seen_prompt = self.seen_prompt, (instructions, prompt)
        if seen is None or seen[0] != instructions:
            return
        text = count_tokens(instructions)
        audio_tokens_cached = 0
        for (seen_id, seen_tokens), item in zip(seen[1], visible, strict=False):
            if (seen_id, seen_tokens) != (item.id, item.tokens):
                break
            spoken = audio_tokens(item.audio_ms) if item.data.get("role") == "user" else 0
            audio_tokens_cached += spoken
            text += item.tokens - spoken
        run.cached_text_tokens, run.cached_audio_tokens = text, audio_tokens_cached

    def cancel(self, reason: str, now: float) -> bool:
        """End the active in-conversation response as cancelled (client cancel or barge-in)."""
        for run in self.runs:
            if run.in_conversation:
                self._finish(run, "cancelled", {"type": "cancelled", "reason": reason})
                return True
        return False

    def fail(self, run: ResponseRun, error: RealtimeError) -> None:
        """End a response `failed`, as a mid-response server error does."""
        self.state.error(error)
        self._finish(run, "failed", {"type": "failed", "error": {"type": error.type, "code": error.code}})

    def inject_server_error(self) -> None:
        """`server_error` mid-response: the active response fails now, or the next one once it has output."""
        error = RealtimeError(
            "The server had an error while processing your request. Sorry about that!", type="server_error"
        )
        run = self.active or (self.runs[0] if self.runs else None)
        if run is not None and run.has_output:
            self.fail(run, error)
        else:
            self.pending_server_error = error

    def _finish(self, run: ResponseRun, status: str, details: dict[str, Any] | None) -> None:
        if run not in self.runs:
            return
        if run.steps is not None:
            steps, run.steps = run.steps, None
            steps.close()
        current = run.current
        if current is not None and current.item.get("status") == "in_progress":
            self._close_output(run, current, "completed" if status == "completed" else "incomplete")
        self.runs.remove(run)
        self.on_finished()
        self.state.emit({"type": "response.done", "response": self._response_object(run, status, details)})
        if status != "failed":
            self.state.emit({"type": "rate_limits.updated", "rate_limits": self._rate_limits(run)})

    # ---- what a response is ------------------------------------------------------------------------

    def _config(self, params: dict[str, Any]) -> dict[str, Any]:
        """The session's response settings, overridden by the `response.create` parameters (GA or beta)."""
        session = self.state.config
        output = session["audio"]["output"]
        modalities = (
            params.get("output_modalities") or params.get("modalities") or session["output_modalities"]
        )
        voice = (
            (params.get("audio") or {}).get("output", {}).get("voice")
            or params.get("voice")
            or output["voice"]
        )
        out_format = (params.get("audio") or {}).get("output", {}).get("format") or output["format"]
        return {
            "output_modalities": ["audio"] if "audio" in modalities else ["text"],
            "instructions": params.get("instructions", session["instructions"]),
            "tools": params.get("tools", session["tools"]),
            "voice": voice,
            "format": out_format,
            "max_output_tokens": params.get(
                "max_output_tokens",
                params.get("max_response_output_tokens", session["max_output_tokens"]),
            ),
        }

    def _input_item(self, raw: Any, index: int) -> Item:
        """One entry of an out-of-band response's own `input`: a reference to an item, or a new item."""
        if isinstance(raw, dict) and raw.get("type") == "item_reference":
            return self.conversation.find(str(raw.get("id")), param=f"response.input[{index}].id")
        return self.conversation.checked_item(raw)

    def _response_object(self, run: ResponseRun, status: str, details: Any = None) -> dict[str, Any]:
        response: dict[str, Any] = {
            "id": run.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [snapshot(o.item) for o in run.outputs] if status != "in_progress" else [],
            "conversation_id": self.conversation.id if run.in_conversation else None,
            "output_modalities": run.config["output_modalities"],
            "max_output_tokens": run.config["max_output_tokens"],
            "audio": {
                "output": {
                    "format": run.config["format"],
                    "voice": session_config.voice_id(run.config["voice"]),
                }
            },
            "usage": None,
            "metadata": run.metadata,
        }
        if status != "in_progress":
            response["usage"] = self._usage(run)
        return response

    def _usage(self, run: ResponseRun) -> dict[str, Any]:
        text_out = sum(count_tokens(o.sent_text) for o in run.outputs)
        audio_out = sum(audio_tokens(o.audio_ms) for o in run.outputs)
        input_audio = min(self.conversation.user_audio_tokens(), run.input_tokens)
        return {
            "total_tokens": run.input_tokens + text_out + audio_out,
            "input_tokens": run.input_tokens,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "cached_tokens": run.cached_text_tokens + run.cached_audio_tokens,
                "text_tokens": run.input_tokens - input_audio,
                "audio_tokens": input_audio,
                "image_tokens": 0,
                "cached_tokens_details": {
                    "text_tokens": run.cached_text_tokens,
                    "audio_tokens": run.cached_audio_tokens,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    def _rate_limits(self, run: ResponseRun) -> list[dict[str, Any]]:
        used = self._usage(run)["total_tokens"]
        # GA sessions report one `tokens` entry (captured live traffic shows no `requests` entry).
        return [
            {"name": "tokens", "limit": 40000, "remaining": max(0, 40000 - used), "reset_seconds": 0.5},
        ]

    # ---- delivery ----------------------------------------------------------------------------------

    def _deliver(self, run: ResponseRun) -> Generator[float, None, None]:
        """The GA event sequence of one response; yields the time each paced step is due."""
        due = run.created_at + self.state.limits.response_latency
        yield due
        if run.reply.text or not (run.reply.tool_calls or run.reply.mcp_calls):
            yield from self._deliver_message(run, due)
        for call in run.reply.tool_calls:
            self._deliver_function_call(run, call.name, call.arguments, call.call_id)
        for mcp_call in run.reply.mcp_calls:
            yield from self.mcp.deliver(self, run, mcp_call, max(due, run.next_due))

    def _open_output(self, run: ResponseRun, output: Output) -> None:
        run.outputs.append(output)
        index = len(run.outputs) - 1
        self.state.emit(
            {
                "type": "response.output_item.added",
                "response_id": run.id,
                "output_index": index,
                "item": output.item,
            }
        )
        if run.in_conversation:
            previous = self.conversation.last_id
            self.conversation.append(Item(output.item, 0))
            self.state.emit(
                {"type": "conversation.item.added", "previous_item_id": previous, "item": output.item}
            )

    def _deliver_message(self, run: ResponseRun, due: float) -> Generator[float, None, None]:
        emit, limits = self.state.emit, self.state.limits  # the load hot path: one lookup, not one per chunk
        audio_out = run.modality == "audio"
        text = run.reply.text or ""
        output = Output(
            item={
                "id": self.state.ids.new("item"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
            kind="audio" if audio_out else "text",
        )
        self._open_output(run, output)
        ids = self._part_ids(run, output)
        part = {"type": "audio", "transcript": ""} if audio_out else {"type": "text", "text": ""}
        emit({"type": "response.content_part.added", **ids, "part": part})
        output.part_open = True
        output.item["content"] = [
            {"type": "output_audio", "transcript": ""} if audio_out else {"type": "output_text", "text": ""}
        ]
        text = self._within_budget(run, text, audio_out)
        if not audio_out:
            for piece in word_pieces(text, max(1, len(text) // 40 + 1)):
                output.sent_text += piece
                emit({"type": "response.output_text.delta", **ids, "delta": piece})
            return
        self.assistant_audio_present = True
        # The model declares the audio part, then its first audio comes a moment later (a truncate in
        # between finds no audio to truncate).
        if limits.audio_start_delay > 0:
            due += limits.audio_start_delay
            yield due
        conversation_item = self.conversation.by_id.get(output.item["id"]) if run.in_conversation else None
        fmt = run.config["format"]["type"]
        bytes_per_ms = BYTES_PER_MS if fmt == "audio/pcm" else audio.G711_RATE // 1000
        chunk = limits.chunk_ms * bytes_per_ms
        pace = limits.chunk_ms / 1000 * limits.pacing
        sent_bytes = 0
        first = True
        for segment_text, last in self._speech_segments(text):
            pcm, deltas, pieces = self._speech_chunks(segment_text, fmt, chunk)
            n_chunks = len(pieces)
            for k in range(n_chunks):
                if not first:
                    # Yield even when unpaced (due unchanged): between chunks is where faults such as an armed
                    # server error get their chance.
                    due += pace
                    yield due
                first = False
                data = pcm[k * chunk : (k + 1) * chunk]
                sent_bytes += len(data)
                output.audio_ms = sent_bytes // bytes_per_ms
                if conversation_item is not None:  # what a truncate may cut, while it is generated
                    conversation_item.audio_ms = output.audio_ms
                if self.audio_sink is not None:
                    self.audio_sink(run.id, output.item["id"], data)
                else:
                    emit({"type": "response.output_audio.delta", **ids, "delta": deltas[k]})
                if pieces[k]:
                    output.sent_text += pieces[k]
                    emit({"type": "response.output_audio_transcript.delta", **ids, "delta": pieces[k]})
            if last:
                return

    def _within_budget(self, run: ResponseRun, text: str, audio_out: bool) -> str:
        """The reply cut to the response's `max_output_tokens` ("inf": the model's per-response maximum)."""
        limit = run.config["max_output_tokens"]
        budget = session_config.MAX_RESPONSE_TOKENS if limit == "inf" else int(limit)

        def cost(candidate: str) -> int:
            spoken = audio_tokens(audio.duration_ms_for_text(candidate)) if audio_out and candidate else 0
            return count_tokens(candidate) + spoken

        if cost(text) <= budget:
            return text
        low, high = 0, len(text)  # the longest prefix within budget: cost grows with length
        while low < high:
            middle = (low + high + 1) // 2
            if cost(text[:middle]) <= budget:
                low = middle
            else:
                high = middle - 1
        cut = text[:low]
        if " " in cut.strip():
            cut = cut[: cut.rstrip().rfind(" ") + 1]  # end on a word boundary, as a token limit does
        run.truncated = True
        return cut

    def _speech_segments(self, text: str) -> Generator[tuple[str, bool], None, None]:
        """(the text a piece of audio speaks, is last): one piece for a short reply, else segments of about
        SPEECH_SEGMENT_MS, each synthesised only when delivery asks for it."""
        if audio.duration_ms_for_text(text) <= WHOLE_SPEECH_MAX_MS:
            yield text, True
            return
        per_segment = max(1, SPEECH_SEGMENT_MS // audio.MS_PER_CHAR)
        segments = word_pieces(text, math.ceil(len(text) / per_segment))
        segments = [segment for segment in segments if segment] or [text]
        for index, segment in enumerate(segments):
            yield segment, index == len(segments) - 1

    def _speech_chunks(self, text: str, fmt: str, chunk: int) -> SpeechChunks:
        """The speech of `text` in `fmt`, the base64 payloads of its `chunk`-byte deltas, and the text
        split in step with them (cached: a response's start is the costly step when many begin at once)."""
        key = (text, fmt, self.audio_seed, chunk)
        cached = _speech_chunk_cache.get(key)
        if cached is None:
            pcm = self._speech(text, fmt)
            deltas = tuple(base64.b64encode(pcm[i : i + chunk]).decode() for i in range(0, len(pcm), chunk))
            pieces = tuple(word_pieces(text, max(1, math.ceil(len(pcm) / chunk))))
            cached = _speech_chunk_cache[key] = (pcm, deltas or ("",), pieces)
        return cached

    def _speech(self, text: str, fmt: str) -> bytes:
        """The audio of `text` in the output format.

        Seeded by the session's audio seed and the text (not the response), so a load test's repeated
        replies come from the synthesis cache; G.711 is synthesised at 8 kHz rather than resampled.
        """
        if fmt == "audio/pcm":
            return audio.speech_for_text(text, seed=self.audio_seed)
        narrowband = audio.speech_for_text(text, seed=self.audio_seed, rate=audio.G711_RATE)
        samples = np.frombuffer(narrowband, "<i2")
        return audio.ulaw_encode(samples) if fmt == "audio/pcmu" else audio.alaw_encode(samples)

    def _part_ids(self, run: ResponseRun, output: Output) -> dict[str, Any]:
        return {
            "response_id": run.id,
            "item_id": output.item["id"],
            "output_index": run.outputs.index(output),
            "content_index": 0,
        }

    def _close_output(self, run: ResponseRun, output: Output, status: str) -> None:
        """The pending `*.done` events of an output, with what was actually delivered."""
        emit = self.state.emit
        ids = self._part_ids(run, output)
        if output.part_open:
            output.part_open = False
            if output.kind == "audio":
                emit({"type": "response.output_audio.done", **ids})
                emit({"type": "response.output_audio_transcript.done", **ids, "transcript": output.sent_text})
                part = {"type": "audio", "transcript": output.sent_text}
                output.item["content"] = [{"type": "output_audio", "transcript": output.sent_text}]
            else:
                emit({"type": "response.output_text.done", **ids, "text": output.sent_text})
                part = {"type": "text", "text": output.sent_text}
                output.item["content"] = [{"type": "output_text", "text": output.sent_text}]
            emit({"type": "response.content_part.done", **ids, "part": part})
        if "status" in output.item:  # MCP items have none (the SDK's types)
            output.item["status"] = status
        # The real service closes the conversation item before the response's output item.
        if run.in_conversation:
            item = self.conversation.by_id.get(output.item["id"])
            if item is not None:  # the client may have deleted it meanwhile
                item.audio_ms = output.audio_ms
                item.tokens = item_tokens(item_text(output.item), output.audio_ms)
                emit({"type": "conversation.item.done", "item": output.item})
        emit(
            {
                "type": "response.output_item.done",
                "response_id": run.id,
                "output_index": ids["output_index"],
                "item": output.item,
            }
        )

    def _deliver_function_call(self, run: ResponseRun, name: str, arguments: str, call_id: str) -> None:
        emit = self.state.emit
        output = Output(
            item={
                "id": self.state.ids.new("item"),
                "type": "function_call",
                "status": "in_progress",
                "name": name,
                "call_id": call_id,
                "arguments": "",
            },
            kind="function_call",
        )
        self._open_output(run, output)
        base = {"response_id": run.id, "item_id": output.item["id"], "output_index": len(run.outputs) - 1}
        for piece in _chunks(arguments, 16):
            output.sent_text += piece
            emit(
                {"type": "response.function_call_arguments.delta", **base, "call_id": call_id, "delta": piece}
            )
        output.item["arguments"] = arguments
        emit(
            {
                "type": "response.function_call_arguments.done",
                **base,
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        )
        self._close_output(run, output, "completed")


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
