"""The conversation: its items in order, the client's item events, the context window, token accounting."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from .. import session_config
from ..model import count_tokens, item_text
from ..protocol import RealtimeError, invalid_value, missing_parameter
from ..schema import Bool, Enum, List, Obj, OneOf, Str, Tagged, check
from .state import BYTES_PER_MS, SessionState

AUDIO_TOKENS_PER_SECOND = 10  # the real service bills roughly ten audio tokens per second

_CONTENT_PART = Obj(
    {
        "type": Str(),
        "text": Str(),
        "audio": Str(),
        "transcript": OneOf((Str(), Enum((None,)))),
        "image_url": Str(),
        "detail": Str(),
    }
)
_MESSAGE = Obj(
    {
        "id": Str(max_length=32),
        "type": Str(),
        "object": Str(),
        "status": Str(),
        "role": Enum(("user", "assistant", "system")),
        "content": List(_CONTENT_PART),
    },
    required=("role", "content"),
)
_FUNCTION_CALL = Obj(
    {
        "id": Str(max_length=32),
        "type": Str(),
        "object": Str(),
        "status": Str(),
        "name": Str(),
        "call_id": Str(),
        "arguments": Str(),
    },
    required=("name", "arguments"),
)
_FUNCTION_OUTPUT = Obj(
    {
        "id": Str(max_length=32),
        "type": Str(),
        "object": Str(),
        "status": Str(),
        "call_id": Str(),
        "output": Str(),
    },
    required=("call_id", "output"),
)
# The client's answer to an MCP approval request (the SDK's `RealtimeMcpApprovalResponseParam`; its `id` may
# be left to the server, as openai-agents-js's `sendMcpResponse` does).
_MCP_APPROVAL_RESPONSE = Obj(
    {
        "id": Str(max_length=32),
        "type": Str(),
        "approval_request_id": Str(),
        "approve": Bool(),
        "reason": OneOf((Str(), Enum((None,)))),
    },
    required=("approval_request_id", "approve"),
)
ITEM = Tagged(
    "type",
    {
        "message": _MESSAGE,
        "function_call": _FUNCTION_CALL,
        "function_call_output": _FUNCTION_OUTPUT,
        "mcp_approval_response": _MCP_APPROVAL_RESPONSE,
    },
)
PARTS_BY_ROLE = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio"),
}


def audio_tokens(ms: int) -> int:
    return math.ceil(ms * AUDIO_TOKENS_PER_SECOND / 1000)


def item_tokens(text: str, audio_ms: int) -> int:
    """What an item costs in the context window: its text, its audio, and a fixed per-item overhead."""
    return count_tokens(text) + audio_tokens(audio_ms) + 4


@dataclass
class Item:
    data: dict[str, Any]
    tokens: int
    audio_ms: int = 0  # assistant audio generated (truncation bound) or user audio received

    @property
    def id(self) -> str:
        return self.data["id"]


class Conversation:
    """The session's items, in conversation order, and by id."""

    def __init__(self, state: SessionState, conversation_id: str) -> None:
        self.state = state
        self.id = conversation_id
        self.items: list[Item] = []
        self.by_id: dict[str, Item] = {}
        # Items a `retention_ratio` truncation has dropped from the model's view: they stay dropped, so the
        # context's prefix (and the cache) holds until the conversation overflows again.
        self.truncated_ids: set[str] = set()

    @property
    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    # ---- client events -----------------------------------------------------------------------------

    def on_create(self, event: dict[str, Any], now: float) -> None:
        item = self.checked_item(self.state.dialect.incoming_item(event["item"]))
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self.by_id:
            raise RealtimeError(
                f"Previous item with id '{previous}' not found.",
                code="item_not_found",
                param="previous_item_id",
            )
        if previous is None:
            previous = self.last_id
        self.insert(item, previous)

    def on_retrieve(self, event: dict[str, Any], now: float) -> None:
        item = self.find(event["item_id"])
        self.state.emit({"type": "conversation.item.retrieved", "item": item.data})

    def on_delete(self, event: dict[str, Any], now: float) -> None:
        item = self.find(event["item_id"])
        self.items.remove(item)
        del self.by_id[item.id]
        self.state.emit({"type": "conversation.item.deleted", "item_id": item.id})

    def on_truncate(self, event: dict[str, Any], now: float) -> None:
        item = self.find(event["item_id"])
        content_index, end_ms = event["content_index"], event["audio_end_ms"]
        content = item.data.get("content") or []
        # An assistant message whose audio has not started yet (declared by content_part.added, no delta
        # so far) has no model output audio either: the real service refuses it the same way
        # (livekit/agents#6157: a barge-in in that window, truncate at 0 ms).
        has_audio = any(p.get("type") == "output_audio" for p in content) and item.audio_ms > 0
        if item.data.get("role") != "assistant" or not has_audio:
            raise RealtimeError(
                "Only model output audio messages can be truncated",
                code="unsupported_content_type",
                param="item_id",
            )
        if content_index >= len(content) or content[content_index].get("type") != "output_audio":
            raise invalid_value("content_index", content_index)
        if end_ms > item.audio_ms:
            raise RealtimeError(
                f"Audio content of {item.audio_ms}ms is already shorter than {end_ms}ms",
                code="invalid_value",
                param="audio_end_ms",
            )
        part = content[content_index]
        transcript = part.get("transcript") or ""
        part["transcript"] = heard_transcript(transcript, end_ms, item.audio_ms)
        item.audio_ms = end_ms
        item.tokens = item_tokens(part["transcript"], end_ms)
        self.state.emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": content_index,
                "audio_end_ms": end_ms,
            }
        )

    # ---- items -------------------------------------------------------------------------------------

    def checked_item(self, raw: Any) -> Item:
        """A client-supplied item, validated and completed (id, status), with its audio counted."""
        data = check(ITEM, raw, "item")
        data.setdefault("type", "message")
        item_id = data.get("id") or self.state.ids.new("item")
        if item_id in self.by_id:
            raise RealtimeError(
                f"Item with id '{item_id}' already exists.", code="item_already_exists", param="item.id"
            )
        data["id"] = item_id
        if data["type"] == "mcp_approval_response":
            self._check_approval_response(data)
            return Item(data, item_tokens("", 0))  # MCP items carry no object or status (the SDK's types)
        data["status"] = "completed"
        audio_ms = 0
        if data["type"] == "message":
            allowed = PARTS_BY_ROLE[data["role"]]
            for index, part in enumerate(data["content"]):
                kind = part.get("type")
                if kind is None:
                    raise missing_parameter(f"item.content[{index}].type")
                if kind not in allowed:
                    raise invalid_value(f"item.content[{index}].type", kind, allowed)
                if kind in ("input_audio", "output_audio") and "audio" in part:
                    try:
                        audio_ms += len(base64.b64decode(part.pop("audio"), validate=True)) // BYTES_PER_MS
                    except (binascii.Error, ValueError):
                        raise RealtimeError(
                            "Invalid 'item.content.audio'. Expected base64-encoded audio bytes.",
                            code="invalid_value",
                            param=f"item.content[{index}].audio",
                        ) from None
                    part.setdefault("transcript", None)
        elif data["type"] == "function_call":
            data.setdefault("call_id", self.state.ids.new("call"))
        return Item(data, item_tokens(item_text(data), audio_ms), audio_ms=audio_ms)

    def _check_approval_response(self, data: dict[str, Any]) -> None:
        wanted = data["approval_request_id"]
        request = self.by_id.get(wanted)
        if request is None or request.data.get("type") != "mcp_approval_request":
            raise RealtimeError(
                f"MCP approval request with id '{wanted}' not found.",
                code="item_not_found",
                param="item.approval_request_id",
            )
        answered = any(
            it.data.get("type") == "mcp_approval_response" and it.data.get("approval_request_id") == wanted
            for it in self.items
        )
        if answered:
            raise RealtimeError(
                f"MCP approval request '{wanted}' has already been answered.",
                code="invalid_value",
                param="item.approval_request_id",
            )

    def insert(self, item: Item, previous_id: str | None) -> Item:
        """Insert after `previous_id` (None or "root": first) and announce it as added and done."""
        if previous_id is None or previous_id == "root":
            index = 0
        else:
            index = next(i for i, it in enumerate(self.items) if it.id == previous_id) + 1
        previous_id = self.items[index - 1].id if index > 0 else None
        self.items.insert(index, item)
        self.by_id[item.id] = item
        emit = self.state.emit
        emit({"type": "conversation.item.added", "previous_item_id": previous_id, "item": item.data})
        emit({"type": "conversation.item.done", "previous_item_id": previous_id, "item": item.data})
        return item

    def append(self, item: Item) -> None:
        """Append without announcing it (a response announces its own output items as they stream)."""
        self.items.append(item)
        self.by_id[item.id] = item

    def find(self, item_id: str, param: str = "item_id") -> Item:
        item = self.by_id.get(item_id)
        if item is None:
            raise RealtimeError(
                f"Item with item_id '{item_id}' not found.", code="item_not_found", param=param
            )
        return item

    # ---- what a response sees and pays for -----------------------------------------------------------

    def context_window(self, instructions: str) -> list[Item]:
        """What the model sees of the conversation, by the session's `truncation`.

        The budget is the context window less the maximum output and the instructions (as the SDK's
        docstring counts it: a 32k model with 4,096 output tokens holds 28,224 after instructions), or a
        retention ratio's own `token_limits.post_instructions`. `auto` drops the oldest items until the rest
        fits; `retention_ratio` r, once the conversation overflows, drops the oldest until only r of the
        budget is used and keeps them dropped; `disabled` never drops, and refuses a context that overflows.
        """
        config = self.state.config
        max_out = config["max_output_tokens"]
        budget = self.state.limits.context_window - (
            session_config.MAX_RESPONSE_TOKENS if max_out == "inf" else max_out
        )
        budget -= count_tokens(instructions)
        truncation = config.get("truncation", "auto")
        if truncation == "disabled":
            used = sum(item.tokens for item in self.items)
            if used > budget:
                raise RealtimeError(
                    f"The conversation ({used} tokens after instructions) exceeds the model's input token "
                    f"limit ({budget}) and truncation is disabled.",
                    code="context_length_exceeded",
                )
            return list(self.items)
        if isinstance(truncation, dict):
            limit = (truncation.get("token_limits") or {}).get("post_instructions")
            budget = min(budget, limit) if limit is not None else budget
            return self._retained(budget, truncation["retention_ratio"])
        visible: list[Item] = []
        for item in reversed(self.items):
            budget -= item.tokens
            if budget < 0:
                break
            visible.append(item)
        visible.reverse()
        return visible

    def _retained(self, budget: int, ratio: float) -> list[Item]:
        visible = [item for item in self.items if item.id not in self.truncated_ids]
        used = sum(item.tokens for item in visible)
        if used <= budget:
            return visible
        keep = budget * ratio
        while visible and used > keep:
            dropped = visible.pop(0)
            self.truncated_ids.add(dropped.id)
            used -= dropped.tokens
        return visible

    def user_audio_tokens(self) -> int:
        return sum(audio_tokens(it.audio_ms) for it in self.items if it.data.get("role") == "user")


def heard_transcript(transcript: str, heard_ms: int, total_ms: int) -> str:
    """The words a listener heard by `heard_ms`, assuming speech spread evenly over the audio."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return transcript
    cut = int(len(transcript) * heard_ms / total_ms)
    head = transcript[:cut]
    if cut < len(transcript) and not transcript[cut].isspace() and " " in head:
        head = head[: head.rfind(" ")]  # a word counts as heard only when all of it was
    elif cut < len(transcript) and not transcript[cut].isspace():
        head = ""
    return head.rstrip()
