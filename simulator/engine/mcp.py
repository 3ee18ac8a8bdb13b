"""Remote MCP tools (`tools: [{"type": "mcp", ...}]`): listing each server's tools, approvals, and calls.

No network call is made: a server's tool list and each call's result come from the model's script. What
the client sees follows the real service (sources in docs/parity.md):

- A session that declares a new `server_label` (session.update, or a response.create's own tools) gets an
  `mcp_list_tools` conversation item: `conversation.item.added` (no tools yet), `mcp_list_tools.in_progress`,
  then `mcp_list_tools.completed` (or `.failed`) and `conversation.item.done` with the tools. The model can
  call a server's tools only once its listing completed.
- A call needing approval (`require_approval` "always", the default, or a filter naming the tool) is an
  `mcp_approval_request` output item; the response ends. The client answers with a `conversation.item.create`
  of an `mcp_approval_response`, then `response.create`: the approved call runs (or the model declines).
- A call is an `mcp_call` output item: `response.mcp_call_arguments.delta`/`.done`,
  `response.mcp_call.in_progress`, then `.completed` (output) or `.failed` (error), `conversation.item.done`,
  `response.output_item.done`. The response ends there; the client asks for the next one
  (openai-agents-js sends `response.create` on each completed MCP call).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..model import McpCall, item_text
from ..protocol import RealtimeError
from .conversation import Conversation, Item, item_tokens
from .state import SessionState

if TYPE_CHECKING:
    from .responses import Responder, ResponseRun

ListingStatus = Literal["in_progress", "completed", "failed"]
# The errors an MCP call can end with (the SDK's RealtimeMcpToolCall.error union).
CALL_ERROR_TYPES = ("tool_execution_error", "http_error", "protocol_error")
ARGUMENT_DELTA_CHARS = 16


@dataclass
class Listing:
    """One server's tool listing: its conversation item and how it went."""

    item: dict[str, Any]
    status: ListingStatus = "in_progress"
    tool_names: frozenset[str] = frozenset()


@dataclass
class McpServers:
    """The session's MCP servers by label: listings, timers for what takes time, and armed failures."""

    state: SessionState
    conversation: Conversation
    listings: dict[str, Listing] = field(default_factory=dict)
    # Armed by faults: the next listing fails; the next call fails with this error type.
    fail_next_listing: bool = False
    fail_next_call: str | None = None

    # ---- listing -------------------------------------------------------------------------------------

    def check(self, tools: list[dict[str, Any]], param: str = "session.tools") -> None:
        """Refuse an MCP tool that names no server (before the configuration takes it)."""
        for index, tool in enumerate(tools):
            if tool.get("type") != "mcp":
                continue
            if not any(tool.get(key) for key in ("server_url", "connector_id", "tunnel_id")):
                raise RealtimeError(
                    "Missing required parameter: one of 'server_url', 'connector_id' or 'tunnel_id' must be "
                    "provided for an MCP tool.",
                    code="missing_required_parameter",
                    param=f"{param}[{index}].server_url",
                )

    def configure(self, tools: list[dict[str, Any]], now: float) -> None:
        """List the tools of every MCP server in `tools` not listed yet (beta sessions have no MCP tools)."""
        if self.state.dialect.beta:
            return
        for tool in tools:
            label = tool.get("server_label")
            if tool.get("type") == "mcp" and label not in self.listings:
                self._start_listing(label, now)

    def _start_listing(self, label: str, now: float) -> None:
        item_id = self.state.ids.new("item")
        item = {"id": item_id, "type": "mcp_list_tools", "server_label": label, "tools": []}
        listing = Listing(item)
        self.listings[label] = listing
        previous = self.conversation.last_id
        self.conversation.append(Item(item, item_tokens("", 0)))
        self.state.emit({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self.state.emit({"type": "mcp_list_tools.in_progress", "item_id": item["id"]})
        self._after(now + self.state.limits.mcp_latency, lambda: self._finish_listing(listing))

    def _finish_listing(self, listing: Listing) -> None:
        item = listing.item
        if self.fail_next_listing:
            self.fail_next_listing = False
            listing.status = "failed"
            self.state.emit({"type": "mcp_list_tools.failed", "item_id": item["id"]})
        else:
            tools = self.state.model.list_mcp_tools(item["server_label"])
            item["tools"] = tools
            listing.status = "completed"
            listing.tool_names = frozenset(tool["name"] for tool in tools)
            stored = self.conversation.by_id.get(item["id"])
            if stored is not None:  # the tool definitions take room in the context
                stored.tokens = item_tokens(json.dumps(tools), 0)
            self.state.emit({"type": "mcp_list_tools.completed", "item_id": item["id"]})
        self.state.emit({"type": "conversation.item.done", "item": item})

    def available(self, tools: list[dict[str, Any]]) -> dict[str, frozenset[str]]:
        """The tools the model may call, by server label: listed (completed) and in `allowed_tools`."""
        available: dict[str, frozenset[str]] = {}
        for tool in tools:
            if tool.get("type") != "mcp":
                continue
            listing = self.listings.get(tool.get("server_label", ""))
            if listing is None or listing.status != "completed":
                continue
            names = listing.tool_names
            allowed = tool.get("allowed_tools")
            if isinstance(allowed, list):
                names = names & frozenset(allowed)
            elif isinstance(allowed, dict) and allowed.get("tool_names") is not None:
                names = names & frozenset(allowed["tool_names"])
            available[tool["server_label"]] = names
        return available

    # ---- calls ---------------------------------------------------------------------------------------

    def needs_approval(self, tools: list[dict[str, Any]], label: str, name: str) -> bool:
        """`require_approval`: "never", "always" (the default, as for the Responses API), or a filter."""
        tool = next((t for t in tools if t.get("type") == "mcp" and t.get("server_label") == label), None)
        setting = (tool or {}).get("require_approval")
        if setting is None or setting == "always":
            return True
        if setting == "never":
            return False
        if name in ((setting.get("never") or {}).get("tool_names") or ()):
            return False
        return True  # named under "always", or named nowhere: approval by default

    def deliver(
        self, responder: Responder, run: ResponseRun, call: McpCall, due: float
    ) -> Generator[float, None, None]:
        """One MCP call of a response: an approval request, or the call itself; yields while it runs."""
        from .responses import Output  # responses imports this module

        # The output bookkeeping (output_item.added/done, conversation.item.added/done) is the Responder's.
        ids = self.state.ids
        if call.approval_request_id is None and self.needs_approval(
            run.config["tools"], call.server_label, call.name
        ):
            request = {
                "id": ids.new("item"),
                "type": "mcp_approval_request",
                "server_label": call.server_label,
                "name": call.name,
                "arguments": call.arguments,
            }
            output = Output(item=request, kind="mcp_approval_request")
            responder._open_output(run, output)
            responder._close_output(run, output, "completed")
            return
        item: dict[str, Any] = {
            "id": ids.new("item"),
            "type": "mcp_call",
            "server_label": call.server_label,
            "name": call.name,
            "arguments": "",
            "approval_request_id": call.approval_request_id,
            "output": None,
            "error": None,
        }
        output = Output(item=item, kind="mcp_call")
        responder._open_output(run, output)
        emit = self.state.emit
        base = {"response_id": run.id, "item_id": item["id"], "output_index": run.outputs.index(output)}
        arguments = call.arguments
        for start in range(0, max(1, len(arguments)), ARGUMENT_DELTA_CHARS):
            piece = arguments[start : start + ARGUMENT_DELTA_CHARS]
            output.sent_text += piece
            emit({"type": "response.mcp_call_arguments.delta", **base, "delta": piece})
        item["arguments"] = arguments
        emit({"type": "response.mcp_call_arguments.done", **base, "arguments": arguments})
        short = {"item_id": item["id"], "output_index": base["output_index"]}
        emit({"type": "response.mcp_call.in_progress", **short})
        latency = self.state.limits.mcp_latency
        if latency > 0:
            yield due + latency  # the remote server at work
        error = self._call_error(call)
        if error is not None:
            item["error"] = error
            emit({"type": "response.mcp_call.failed", **short})
        else:
            item["output"] = call.output or ""
            emit({"type": "response.mcp_call.completed", **short})
        stored = self.conversation.by_id.get(item["id"])
        if stored is not None:
            stored.tokens = item_tokens(item_text(item), 0)
        responder._close_output(run, output, "completed")

    def _call_error(self, call: McpCall) -> dict[str, Any] | None:
        if self.fail_next_call is not None:
            kind, self.fail_next_call = self.fail_next_call, None
            message = f"Error calling tool '{call.name}' on MCP server '{call.server_label}'."
            if kind == "tool_execution_error":
                return {"type": kind, "message": message}
            code = 500 if kind == "http_error" else -32603  # JSON-RPC's internal error
            return {"type": kind, "code": code, "message": message}
        if call.error is not None:
            return {"type": "tool_execution_error", "message": call.error}
        return None

    # ---- time ----------------------------------------------------------------------------------------

    def _after(self, due: float, action: Callable[[], None]) -> None:
        if self.state.limits.mcp_latency <= 0:
            action()  # no latency: at once, so a response created next already sees the tools
        else:
            self.state.later(due, action)
