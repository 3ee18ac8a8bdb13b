"""Azure's session cap as Azure ends it: a `server_error` event, not `session_expired`.

Source: livekit/agents#2341 (Azure surfaced its 30-minute cap as "The server had an error while processing
your request..." of type `server_error`); the protocol notes, "The real service as of late 2026". The close
after it is not in the evidence: rtsim closes 1011 (a server error), which every client treats as retryable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtsim.simulator.cli import build_parser
from rtsim.simulator.serve import config_from_args
from tests.support.engine import validate_ga
from tests.support.wire import recv, ws_url

AZURE_PATH = "/openai/realtime?api-version=2025-08-28&deployment=gpt-realtime"


async def events_until_closed(server: Any, path: str, headers: dict[str, str]) -> tuple[list[dict], int]:
    async with connect(ws_url(server, path), additional_headers=headers) as ws:
        events = []
        with pytest.raises(ConnectionClosed):
            while True:
                events.append(await recv(ws, timeout=10))
    assert ws.close_code is not None
    return events, ws.close_code


async def test_the_azure_cap_ends_with_a_server_error(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(profile="azure", max_session=1.0, pacing=0.0)
    events, code = await events_until_closed(server, AZURE_PATH, {"api-key": "sk-azure"})
    (error,) = [e for e in events if e["type"] == "error"]
    validate_ga(error)
    assert error["error"]["type"] == "server_error" and error["error"]["code"] is None
    assert error["error"]["message"].startswith("The server had an error while processing your request.")
    assert code == 1011
    assert not [e for e in events if (e.get("error") or {}).get("code") == "session_expired"]


async def test_the_azure_ending_is_configurable(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(profile="azure", max_session=1.0, pacing=0.0, expiry_ending="both")
    events, code = await events_until_closed(server, AZURE_PATH, {"api-key": "sk-azure"})
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["session_expired"]
    assert code == 1001


async def test_openai_keeps_session_expired(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(max_session=1.0, pacing=0.0)
    events, code = await events_until_closed(
        server, "/v1/realtime?model=gpt-realtime", {"Authorization": "Bearer sk-test-key"}
    )
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["session_expired"]
    assert code == 1001


def test_serve_offers_the_server_error_ending() -> None:
    args = build_parser().parse_args(["serve", "--profile", "azure", "--expiry-ending", "server_error"])
    assert config_from_args(args).expiry_ending == "server_error"
    default = config_from_args(build_parser().parse_args(["serve", "--profile", "azure"]))
    assert default.expiry_ending is None and default.limits().expiry_ending == "server_error"
