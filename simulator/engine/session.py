"""`Session`: one Realtime session as a sans-I/O facade over its conversation, input turns and responses.

A transport feeds it client events (`receive`) and the time (`advance`), asks when it next needs the
time (`next_deadline`), and sends what it produced (`drain`) until it asks to be closed (`close_request`).
The session itself owns what spans the parts: dispatching client events, `session.update`, the session
cap and the idle timeout.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

from .. import session_config
from ..dialect import GA, Dialect
from ..model import ScriptedModel
from ..protocol import IdFactory, RealtimeError, check_event_type, client_event_id, invalid_type
from ..schema import AnyValue, Enum, Int, Obj, OneOf, Str, check
from . import transcription
from .conversation import Conversation, Item
from .mcp import McpServers
from .responses import BETA_RESPONSE_PARAMS, RESPONSE_PARAMS, Responder, ResponseRun
from .state import Limits, SessionState
from .turns import InputTurns

# Top-level fields of each client event; nested payloads are checked by the part that handles them.
EVENT_FIELDS: dict[str, Obj] = {
    "session.update": Obj({"type": Str(), "event_id": Str(), "session": AnyValue()}, required=("session",)),
    "input_audio_buffer.append": Obj({"type": Str(), "event_id": Str(), "audio": Str()}, required=("audio",)),
    "input_audio_buffer.commit": Obj({"type": Str(), "event_id": Str()}),
    "input_audio_buffer.clear": Obj({"type": Str(), "event_id": Str()}),
    "output_audio_buffer.clear": Obj({"type": Str(), "event_id": Str()}),
    "conversation.item.create": Obj(
        {
            "type": Str(),
            "event_id": Str(),
            "previous_item_id": OneOf((Str(), Enum((None,)))),
            "item": AnyValue(),
        },
        required=("item",),
    ),
    "conversation.item.retrieve": Obj(
        {"type": Str(), "event_id": Str(), "item_id": Str()}, required=("item_id",)
    ),
    "conversation.item.delete": Obj(
        {"type": Str(), "event_id": Str(), "item_id": Str()}, required=("item_id",)
    ),
    "conversation.item.truncate": Obj(
        {"type": Str(), "event_id": Str(), "item_id": Str(), "content_index": Int(0), "audio_end_ms": Int(0)},
        required=("item_id", "content_index", "audio_end_ms"),
    ),
    "response.create": Obj({"type": Str(), "event_id": Str(), "response": RESPONSE_PARAMS}),
    "response.cancel": Obj({"type": Str(), "event_id": Str(), "response_id": Str()}),
}
# A beta session's events: the same, but `response.create` also takes the beta parameter names.
BETA_EVENT_FIELDS = dict(
    EVENT_FIELDS,
    **{"response.create": Obj({"type": Str(), "event_id": Str(), "response": BETA_RESPONSE_PARAMS})},
)

Handler = Callable[[dict[str, Any], float], None]
AZURE_CAP_MESSAGE = (
    "The server had an error while processing your request. Sorry about that! You can retry your request, "
    "or contact us through our help center at help.openai.com if the error persists."
)


class Session:
    """One Realtime session. Construct it, call `start(now)`, then feed it events and time."""

    def __init__(
        self,
        *,
        ids: IdFactory,
        model: ScriptedModel,
        now: float,
        wall: float,
        limits: Limits | None = None,
        model_name: str = session_config.DEFAULT_MODEL,
        dialect: Dialect = GA,
        initial_config: dict[str, Any] | None = None,
        audio_seed: int = 0,
        audio_turns: Iterator[int] | None = None,
        session_type: str = "realtime",
    ) -> None:
        limits = limits or Limits()
        self.id = ids.new("sess")
        if session_type == transcription.SESSION_TYPE:  # `?intent=transcription`: no model, no responses
            config = transcription.default_session()
            if initial_config:
                config = transcription.merge(config, initial_config)
        else:
            config = session_config.default_session(model_name)
            if initial_config:
                config = session_config.merge_ga(config, initial_config)
        self._state = SessionState(
            ids=ids,
            model=model,
            limits=limits,
            dialect=dialect,
            config=config,
            now=now,
            rng=random.Random(self.id),  # the id is seeded: timing is reproducible wherever ids are
        )
        self._conversation = Conversation(self._state, ids.new("conv"))
        self._responder = Responder(self._state, self._conversation, audio_seed=audio_seed)
        # The server shares one transcript counter across a client's sessions, so a reconnect does not
        # replay the script from the start.
        self._turns = InputTurns(
            self._state,
            self._conversation,
            self._responder,
            audio_turns=audio_turns if audio_turns is not None else itertools.count(),
        )
        self._responder.on_finished = self._turns.model_turn_ended
        self.started_at = now
        self.deadline = now + limits.max_session
        self.expires_at = int(wall + limits.max_session)
        self.deadline_wall = wall + limits.max_session  # expires_at is whole seconds; this is exact
        minutes = limits.max_session / 60
        self.expiry_message = f"Your session hit the maximum duration of {minutes:g} minutes."
        self.idle_timeout = limits.idle_timeout  # faults may change it on a live session
        self._handlers: dict[str, Handler] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._turns.on_append,
            "input_audio_buffer.commit": self._turns.on_commit,
            "input_audio_buffer.clear": self._turns.on_clear,
            "output_audio_buffer.clear": self._on_output_audio_buffer_clear,
            "conversation.item.create": self._conversation.on_create,
            "conversation.item.retrieve": self._conversation.on_retrieve,
            "conversation.item.delete": self._conversation.on_delete,
            "conversation.item.truncate": self._conversation.on_truncate,
            "response.create": self._responder.on_create,
            "response.cancel": self._responder.on_cancel,
        }

    # ---- state the transports and faults read or set ------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._state.limits

    @property
    def dialect(self) -> Dialect:
        return self._state.dialect

    @property
    def config(self) -> dict[str, Any]:
        return self._state.config

    @config.setter
    def config(self, value: dict[str, Any]) -> None:
        # Whoever sets the config (session.update, a WebRTC call's session part, a SIP accept), the
        # server VAD follows its turn_detection.
        self._state.config = value
        self._turns.configure_vad()

    @property
    def close_request(self) -> tuple[int, str] | None:
        return self._state.close_request

    @close_request.setter
    def close_request(self, value: tuple[int, str] | None) -> None:
        self._state.close_request = value

    @property
    def items(self) -> list[Item]:
        return self._conversation.items

    @property
    def by_id(self) -> dict[str, Item]:
        return self._conversation.by_id

    @property
    def responses(self) -> list[ResponseRun]:
        return self._responder.runs

    @property
    def active_response(self) -> ResponseRun | None:
        return self._responder.active

    @property
    def audio_sink(self) -> Callable[[str, str, bytes], None] | None:
        """Where a transport that carries audio out of band (WebRTC's track) takes the model's audio."""
        return self._responder.audio_sink

    @audio_sink.setter
    def audio_sink(self, sink: Callable[[str, str, bytes], None] | None) -> None:
        self._responder.audio_sink = sink

    @property
    def is_transcription(self) -> bool:
        """A transcription session (`?intent=transcription`): audio in, transcripts out, no responses."""
        return transcription.is_transcription(self._state.config)

    @property
    def mcp(self) -> McpServers:
        """The session's MCP servers: their listings, and the failures faults arm."""
        return self._responder.mcp

    @property
    def input_buffer(self) -> bytearray:
        return self._turns.buffer

    @property
    def fail_next_transcription(self) -> bool:
        return self._turns.fail_next_transcription

    @fail_next_transcription.setter
    def fail_next_transcription(self, value: bool) -> None:
        self._turns.fail_next_transcription = value

    # ---- transport-facing API -------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._state.emit({"type": "session.created", "session": self._session_object()})
        self._responder.mcp.configure(self.config.get("tools", []), now)  # a token's or a call's MCP servers

    def receive(self, event: dict[str, Any], now: float) -> None:
        """Handle one decoded client event. Client mistakes become `error` events; the session goes on."""
        if self._state.close_request is not None:
            return
        self._state.last_activity = now
        try:
            event_type = check_event_type(event)
            if self.is_transcription and event_type not in transcription.CLIENT_EVENTS:
                raise transcription.refuse(event_type)
            fields = BETA_EVENT_FIELDS if self.dialect.beta else EVENT_FIELDS
            # Handlers see the checked copy, where a null optional parameter is simply absent.
            event = check(fields[event_type], event)
            self._handlers[event_type](event, now)
        except RealtimeError as exc:
            self.error(exc, client_event_id(event))
        self.advance(now)

    def advance(self, now: float) -> None:
        """Run everything due by `now`: timed work and paced response steps, then the session cap and the
        idle timeout."""
        self._state.run_timers(now)
        self._responder.run_due(now)
        if self._state.close_request is not None:
            return
        if now >= self.deadline:
            self.expire()
        elif self._idle_deadline() <= now:
            self.idle_expire()

    def next_deadline(self) -> float | None:
        if self._state.close_request is not None:
            return None
        due = [run.next_due for run in self._responder.runs if run.steps is not None]
        timer = self._state.next_timer
        if timer is not None:
            due.append(timer)
        due.append(self.deadline)
        due.append(self._idle_deadline())
        return min(due)

    def drain(self) -> list[dict[str, Any]]:
        state = self._state
        out, state.outbox = state.outbox, []
        return out

    def emit(self, event: dict[str, Any]) -> None:
        """Queue a server event (transports use it for their own events, e.g. WebRTC's output buffer)."""
        self._state.emit(event)

    def error(self, exc: RealtimeError, client_event_id: str | None = None) -> None:
        self._state.error(exc, client_event_id)

    def append_audio(self, pcm16: bytes, now: float) -> None:
        """Caller audio (pcm16 24 kHz) from any transport: the WebSocket's append events or a WebRTC track."""
        self._turns.append_audio(pcm16, now)

    # ---- responses, for transports, faults and tests ---------------------------------------------------

    def create_response(self, params: dict[str, Any], now: float) -> ResponseRun:
        return self._responder.create(params, now)

    def fail_response(self, run: ResponseRun, error: RealtimeError) -> None:
        """End a response `failed`, as a mid-response server error does."""
        self._responder.fail(run, error)

    def inject_server_error(self, now: float) -> None:
        """`server_error` mid-response: the active response fails now, or the next one once it has output."""
        self._responder.inject_server_error()

    # ---- the session's end ----------------------------------------------------------------------------

    def expire(self) -> None:
        """The session cap: the `session_expired` error event, a 1001 close, both, or Azure's `server_error`
        (as configured)."""
        self._responder.cut_off()  # the real server just ends: no response.done for what was cut off
        ending = self.limits.expiry_ending
        if ending == "server_error":
            # Azure surfaces its 30-minute cap as a generic server error (livekit/agents#2341), so a client
            # cannot tell it from a transient failure by the event alone.
            self.error(RealtimeError(AZURE_CAP_MESSAGE, type="server_error"))
            self.close_request = (1011, "server_error")
            return
        if ending in ("error", "both"):
            self.error(RealtimeError(self.expiry_message, code="session_expired"))
        if ending == "error":
            self.close_request = (1000, "")
        else:
            self.close_request = (1001, self.expiry_message)

    def keep_alive(self, now: float) -> None:
        """The explicit keep-alive call: resets the idle timer as activity does."""
        self._state.last_activity = now

    def idle_expire(self) -> None:
        timeout = self.idle_timeout or 0
        message = f"Session closed after {timeout:g} seconds of inactivity."
        self.error(RealtimeError(message, code="session_idle_timeout"))
        self.close_request = (1000, "session idle timeout")

    def _idle_deadline(self) -> float:
        if self.idle_timeout is None or self._responder.runs:
            return math.inf  # a response in progress is activity
        return self._state.last_activity + self.idle_timeout

    # ---- session.update and the events only a transport can serve ------------------------------------

    def _on_session_update(self, event: dict[str, Any], now: float) -> None:
        update = event["session"]
        if not isinstance(update, dict):
            raise invalid_type("session", "an object", update)
        if not self.dialect.beta:
            transcription.check_type(self.config, update)
        if self.is_transcription:
            self.config = transcription.merge(self.config, update)
            self._turns.configure_vad()
            self._state.emit({"type": "session.updated", "session": self._session_object()})
            return
        merged = self.dialect.session_update(self.config, update)
        new_voice = merged["audio"]["output"]["voice"]
        if self._responder.assistant_audio_present and new_voice != self.config["audio"]["output"]["voice"]:
            raise RealtimeError(
                "Cannot update a conversation's voice if assistant audio is present.",
                code="cannot_update_voice",
                param="session.audio.output.voice",
            )
        self._responder.mcp.check(merged["tools"])
        self.config = merged
        self._turns.configure_vad()
        self._state.emit({"type": "session.updated", "session": self._session_object()})
        self._responder.mcp.configure(self.config["tools"], now)  # new MCP servers list their tools

    def _on_output_audio_buffer_clear(self, event: dict[str, Any], now: float) -> None:
        # Over WebSocket there is no server-side output buffer to clear; the real service rejects it.
        raise RealtimeError(
            "output_audio_buffer.clear is only supported for WebRTC sessions.",
            code="unsupported_event",
            param="type",
        )

    def _session_object(self) -> dict[str, Any]:
        if self.is_transcription:
            return transcription.render(self.config, session_id=self.id, expires_at=self.expires_at)
        return self.dialect.render_session(self.config, session_id=self.id, expires_at=self.expires_at)
