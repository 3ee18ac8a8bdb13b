"""Remote MCP tools: tool listing, approvals, calls and their failures, as the real GA service shows them.

Sources (also in docs/parity.md):
- event and item shapes: the installed SDK, `openai/types/realtime/*mcp*` (every event validated below);
- the listing as a conversation item that is retrieved on `mcp_list_tools.in_progress` and read with its
  tools on `conversation.item.done`; approval requests read on `conversation.item.done`; the answer as
  `conversation.item.create` of an `mcp_approval_response`; `response.create` after each completed call:
  openai-agents-js `packages/agents-realtime/src/openaiRealtimeBase.ts` and `realtimeSession.ts`
  (`automaticallyTriggerResponseForMcpToolCalls`, `sendMcpResponse`);
- `session.updated` then `mcp_list_tools.in_progress` then `mcp_list_tools.completed` after a
  session.update with an MCP tool: community.openai.com "Realtime API - MCP server sends 10 tools but API
  receives 0" (client log); a tool the listing has not delivered cannot be called: community.openai.com
  "MCP tool not found in cache, the session must have completed fetching the tools...".
"""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.realtime import ConversationItem
from pydantic import TypeAdapter

from rtsim.simulator.engine import Limits, Session
from rtsim.simulator.model import Script, ScriptedModel
from rtsim.simulator.protocol import MCP_EVENT_TYPES
from tests.support.engine import make_session, run_until_idle, user_text, validate_ga

SCRIPT = {
    "mcp_servers": {
        "docs": {
            "tools": [
                {"name": "search_docs", "description": "Search the docs", "input_schema": {"type": "object"}},
                {"name": "delete_page", "input_schema": {"type": "object"}},
            ]
        }
    },
    "replies": [
        {
            "match": "search the docs for (\\w+)",
            "mcp_call": {"name": "search_docs", "arguments": {"query": "{1}"}, "output": "3 pages on {1}"},
            "after_tool": "I found {output}.",
        },
        {
            "match": "delete (\\w+)",
            "mcp_call": {"server_label": "docs", "name": "delete_page", "arguments": {"page": "{1}"},
                         "error": "page {1} is protected"},
        },
    ],
}


def docs_tool(**extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.invalid/sse", **extra}


class Flow:
    """A session on a fake clock, recording every event it sends."""

    def __init__(self, limits: Limits | None = None, script: dict[str, Any] | None = None) -> None:
        model = ScriptedModel(Script.from_dict(script if script is not None else SCRIPT))
        self.session: Session = make_session(model=model, limits=limits or Limits(pacing=0.0))
        self.now = 1.0
        self.events = self.session.drain()

    def step(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.session.receive(event, self.now)
        self.now = max(self.now, run_until_idle(self.session, self.now))
        out = self.session.drain()
        self.events.extend(out)
        return out

    def update_tools(self, *tools: dict[str, Any]) -> list[dict[str, Any]]:
        session = {"type": "realtime", "output_modalities": ["text"], "tools": list(tools)}
        return self.step({"type": "session.update", "session": session})

    def ask(self, text: str) -> list[dict[str, Any]]:
        self.step(user_text(text))
        return self.step({"type": "response.create"})


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def output_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["item"] for e in events if e["type"] == "response.output_item.done"]


def answer(flow: Flow, request_id: str, approve: bool) -> None:
    item = {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}
    flow.step({"type": "conversation.item.create", "item": item})


def mcp_flow() -> list[dict[str, Any]]:
    """Flows that together emit every MCP event kind (test_fidelity takes them into its census)."""
    flow = Flow()
    flow.update_tools(docs_tool(require_approval="never"))
    flow.ask("search the docs for cats")
    flow.session.mcp.fail_next_call = "http_error"
    flow.ask("search the docs for dogs")
    flow.session.mcp.fail_next_listing = True
    flow.update_tools(docs_tool(require_approval="never"), docs_tool(server_label="wiki"))
    return flow.events


def test_every_mcp_event_kind_validates_against_the_sdk_union() -> None:
    events = mcp_flow()
    for event in events:
        validate_ga(event)
    assert MCP_EVENT_TYPES <= set(types(events))


def test_a_session_update_with_an_mcp_server_lists_its_tools_as_a_conversation_item() -> None:
    flow = Flow()
    out = flow.update_tools(docs_tool())
    assert types(out) == [
        "session.updated",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "conversation.item.done",
    ]
    added, done = out[1]["item"], out[4]["item"]
    assert added["type"] == "mcp_list_tools" and added["server_label"] == "docs" and added["tools"] == []
    assert [tool["name"] for tool in done["tools"]] == ["search_docs", "delete_page"]
    assert out[2]["item_id"] == out[3]["item_id"] == added["id"] == done["id"]
    TypeAdapter(ConversationItem).validate_python(done)
    # openai-agents-js retrieves the item on in_progress: it is in the conversation
    retrieved = flow.step({"type": "conversation.item.retrieve", "item_id": added["id"]})
    assert retrieved[0]["type"] == "conversation.item.retrieved"
    # the same server is not listed again on a later update
    assert "mcp_list_tools.in_progress" not in types(flow.update_tools(docs_tool(), docs_tool()))


def test_an_mcp_tool_needs_a_server_url_connector_or_tunnel() -> None:
    flow = Flow()
    out = flow.update_tools({"type": "mcp", "server_label": "docs"})
    assert types(out) == ["error"]
    assert out[0]["error"]["code"] == "missing_required_parameter"
    assert out[0]["error"]["param"] == "session.tools[0].server_url"
    assert flow.session.config["tools"] == []
    out = flow.update_tools({"type": "mcp", "server_label": "docs", "connector_id": "connector_gmail"})
    assert "mcp_list_tools.completed" in types(out)
    bad = flow.update_tools(docs_tool(require_approval="sometimes"))
    assert bad[0]["error"]["param"] == "session.tools[0].require_approval"


def test_an_approved_call_runs_after_the_approval_response_then_the_model_answers_from_its_output() -> None:
    flow = Flow()
    flow.update_tools(docs_tool())  # require_approval defaults to "always"
    first = flow.ask("search the docs for cats")
    (request,) = output_items(first)
    assert request["type"] == "mcp_approval_request"
    assert request["name"] == "search_docs" and request["server_label"] == "docs"
    assert request["arguments"] == '{"query": "cats"}'
    assert "response.mcp_call.in_progress" not in types(first)  # nothing runs before approval
    assert first[-2]["response"]["status"] == "completed"

    answer(flow, request["id"], approve=True)
    second = flow.step({"type": "response.create"})
    mcp_kinds = [t for t in types(second) if "mcp" in t or "output_item" in t]
    assert [t for i, t in enumerate(mcp_kinds) if i == 0 or mcp_kinds[i - 1] != t] == [
        "response.output_item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    (call,) = output_items(second)
    assert call["type"] == "mcp_call" and call["approval_request_id"] == request["id"]
    assert call["output"] == "3 pages on cats" and call["error"] is None
    deltas = "".join(e["delta"] for e in second if e["type"] == "response.mcp_call_arguments.delta")
    assert deltas == call["arguments"] == '{"query": "cats"}'
    # conversation.item.done closes the item before response.output_item.done, as for other outputs
    order = types(second)
    assert order.index("conversation.item.done") < order.index("response.output_item.done")

    third = flow.step({"type": "response.create"})
    text = next(e["text"] for e in third if e["type"] == "response.output_text.done")
    assert text == "I found 3 pages on cats."


def test_a_declined_call_is_not_made() -> None:
    flow = Flow()
    flow.update_tools(docs_tool(require_approval={"always": {"tool_names": ["search_docs"]}}))
    (request,) = output_items(flow.ask("search the docs for cats"))
    answer(flow, request["id"], approve=False)
    out = flow.step({"type": "response.create"})
    assert not any(e["type"].startswith("response.mcp_call") for e in out)
    assert next(e["text"] for e in out if e["type"] == "response.output_text.done") == (
        "I won't use search_docs, as you asked."
    )


def test_an_approval_response_must_answer_a_pending_request() -> None:
    flow = Flow()
    flow.update_tools(docs_tool())
    answer(flow, "item_nothing", approve=True)
    assert flow.events[-1]["error"]["code"] == "item_not_found"
    (request,) = output_items(flow.ask("search the docs for cats"))
    answer(flow, request["id"], approve=True)
    answer(flow, request["id"], approve=True)
    assert flow.events[-1]["type"] == "error"
    assert flow.events[-1]["error"]["param"] == "item.approval_request_id"


def test_require_approval_never_and_a_never_filter_skip_the_request() -> None:
    for setting in ("never", {"never": {"tool_names": ["search_docs"]}}):
        flow = Flow()
        flow.update_tools(docs_tool(require_approval=setting))
        (call,) = output_items(flow.ask("search the docs for cats"))
        assert call["type"] == "mcp_call" and call["approval_request_id"] is None


def test_a_scripted_tool_error_fails_the_call() -> None:
    flow = Flow()
    flow.update_tools(docs_tool(require_approval="never"))
    out = flow.ask("delete home")
    assert "response.mcp_call.failed" in types(out) and "response.mcp_call.completed" not in types(out)
    (call,) = output_items(out)
    assert call["error"] == {"type": "tool_execution_error", "message": "page home is protected"}
    assert call["output"] is None
    follow = flow.step({"type": "response.create"})
    text = next(e["text"] for e in follow if e["type"] == "response.output_text.done")
    assert "page home is protected" in text


@pytest.mark.parametrize("error", ["http_error", "protocol_error", "tool_execution_error"])
def test_an_armed_call_failure_fails_the_next_call_with_that_error(error: str) -> None:
    flow = Flow()
    flow.update_tools(docs_tool(require_approval="never"))
    flow.session.mcp.fail_next_call = error
    (call,) = output_items(flow.ask("search the docs for cats"))
    assert call["error"]["type"] == error and call["output"] is None
    TypeAdapter(ConversationItem).validate_python(call)
    (again,) = output_items(flow.ask("search the docs for dogs"))
    assert again["output"] == "3 pages on dogs"  # one failure, then the server works again


def test_a_failed_listing_leaves_the_servers_tools_uncallable() -> None:
    flow = Flow()
    flow.session.mcp.fail_next_listing = True
    out = flow.update_tools(docs_tool(require_approval="never"))
    assert types(out)[-2:] == ["mcp_list_tools.failed", "conversation.item.done"]
    assert out[-1]["item"]["tools"] == []
    reply = flow.ask("search the docs for cats")
    assert not any(e["type"].startswith("response.mcp_call") for e in reply)
    assert [item["type"] for item in output_items(reply)] == ["message"]


def test_allowed_tools_limits_what_the_model_calls() -> None:
    flow = Flow()
    flow.update_tools(docs_tool(require_approval="never", allowed_tools=["delete_page"]))
    assert [item["type"] for item in output_items(flow.ask("search the docs for cats"))] == ["message"]


def test_a_slow_server_lists_and_calls_after_the_configured_latency() -> None:
    flow = Flow(limits=Limits(pacing=0.0, mcp_latency=2.0))
    session = flow.session
    session.receive(
        {"type": "session.update", "session": {"type": "realtime", "tools": [docs_tool()]}}, 1.0
    )
    early = types(session.drain())
    assert early[-1] == "mcp_list_tools.in_progress"
    assert session.next_deadline() == pytest.approx(3.0)
    session.advance(3.0)
    assert types(session.drain()) == ["mcp_list_tools.completed", "conversation.item.done"]


def test_response_level_mcp_tools_are_listed_when_the_response_starts() -> None:
    flow = Flow()
    flow.step(user_text("search the docs for cats"))
    out = flow.step(
        {"type": "response.create", "response": {"tools": [docs_tool(require_approval="never")]}}
    )
    order = types(out)
    assert order.index("mcp_list_tools.completed") < order.index("response.created")
    assert [item["type"] for item in output_items(out)] == ["mcp_call"]


def test_a_beta_session_ignores_mcp_tools() -> None:
    from rtsim.simulator.dialect import BETA

    session = make_session(model=ScriptedModel(Script.from_dict(SCRIPT)), dialect=BETA)
    session.drain()
    session.receive({"type": "session.update", "session": {"tools": [docs_tool()]}}, 1.0)
    assert types(session.drain()) == ["session.updated"]


def test_the_mcp_tool_fields_are_the_sdks() -> None:
    """The accepted MCP tool fields are the SDK's `Mcp` tool param: an SDK upgrade adding one fails here."""
    import typing

    from openai.types.realtime.realtime_tools_config_union_param import Mcp

    from rtsim.simulator.session_config import MCP_TOOL

    assert set(MCP_TOOL.fields) == set(typing.get_type_hints(Mcp))
    assert MCP_TOOL.required == ("server_label",)
