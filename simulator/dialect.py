"""GA versus beta wire names. The engine speaks GA; a beta session is translated here, at the edge.

Beta differences: items carry `"object": "realtime.item"`; `response.audio.*` /
`response.audio_transcript.*` / `response.text.*` for the GA `response.output_*` events;
`conversation.item.created` for `conversation.item.added` (no `.done`); a flat session object; and assistant
content parts typed `text` / `audio` instead of `output_text` / `output_audio`.
"""

from __future__ import annotations

from typing import Any

from . import protocol, session_config

BETA_EVENT_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
GA_ONLY_EVENTS = frozenset(
    {
        "conversation.item.done",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.input_audio_transcription.segment",  # gpt-4o-transcribe-diarize came with GA
        *protocol.MCP_EVENT_TYPES,
    }
)
BETA_PART_TYPES = {"output_text": "text", "output_audio": "audio"}
GA_PART_TYPES = {"text": "output_text", "audio": "output_audio"}


class Dialect:
    name = "ga"
    beta = False

    def outgoing(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The event as this dialect sends it; None when the dialect has no such event."""
        return event

    def incoming_item(self, item: Any) -> Any:
        return item

    def session_update(self, current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        return session_config.merge_ga(current, update)

    def render_session(self, config: dict[str, Any], *, session_id: str, expires_at: int) -> dict[str, Any]:
        return session_config.render_ga(config, session_id=session_id, expires_at=expires_at)


class BetaDialect(Dialect):
    name = "beta"
    beta = True

    def outgoing(self, event: dict[str, Any]) -> dict[str, Any] | None:
        event_type = event["type"]
        if event_type in GA_ONLY_EVENTS:
            return None
        event = dict(event, type=BETA_EVENT_NAMES.get(event_type, event_type))
        if "item" in event:
            event["item"] = beta_item(event["item"])
        if "response" in event:
            event["response"] = beta_response(event["response"])
        return event

    def incoming_item(self, item: Any) -> Any:
        if not isinstance(item, dict) or item.get("role") != "assistant":
            return item
        content = item.get("content")
        if not isinstance(content, list):
            return item
        parts = [
            dict(part, type=GA_PART_TYPES.get(part.get("type"), part.get("type")))
            if isinstance(part, dict)
            else part
            for part in content
        ]
        return dict(item, content=parts)

    def session_update(self, current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        return session_config.merge_beta(current, update)

    def render_session(self, config: dict[str, Any], *, session_id: str, expires_at: int) -> dict[str, Any]:
        return session_config.to_beta(config, session_id=session_id, expires_at=expires_at)


def beta_item(item: dict[str, Any]) -> dict[str, Any]:
    # Beta items carried `"object": "realtime.item"`; GA items have no `object` field (captured GA traffic).
    beta = dict(item, object="realtime.item")
    content = item.get("content")
    if content:
        beta["content"] = [
            dict(part, type=BETA_PART_TYPES.get(part["type"], part["type"])) for part in content
        ]
    return beta


def beta_response(response: dict[str, Any]) -> dict[str, Any]:
    beta = {k: v for k, v in response.items() if k not in ("output_modalities", "audio")}
    modalities = response.get("output_modalities") or ["audio"]
    beta["modalities"] = ["text", "audio"] if "audio" in modalities else ["text"]
    if "output" in response:
        beta["output"] = [beta_item(item) for item in response["output"]]
    return beta


GA = Dialect()
BETA = BetaDialect()
