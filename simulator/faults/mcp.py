"""Faults of remote MCP servers (scripted: rtsim never calls one): a tool listing that fails, a call that
fails. Each arms the session's MCP part for the next listing or call; nothing happens until one comes."""

from __future__ import annotations

from typing import Any

from ..engine.mcp import CALL_ERROR_TYPES
from ..schema import Enum, Obj
from .kind import FaultKind, Target


def mcp_list_failed(target: Target, params: dict[str, Any]) -> str:
    target.carrier.session.mcp.fail_next_listing = True
    return "next MCP tool listing fails (mcp_list_tools.failed)"


def mcp_call_failed(target: Target, params: dict[str, Any]) -> str:
    failure = params.get("failure", "http_error")
    target.carrier.session.mcp.fail_next_call = failure
    return f"next MCP call fails ({failure})"


FAULTS = (
    FaultKind(
        "mcp-list-failed",
        "session",
        Obj({}),
        mcp_list_failed,
        "the next MCP server's tool listing ends with mcp_list_tools.failed; its tools stay unavailable",
    ),
    FaultKind(
        "mcp-call-failed",
        "session",
        Obj({"failure": Enum(CALL_ERROR_TYPES)}),
        mcp_call_failed,
        "the next MCP call ends with response.mcp_call.failed, an error of type `failure` (http_error)",
    ),
)
