"""Handshake failures the real GA WebSocket reports after the 101: an `error` event, then a close.

Sources (docs/parity.md, "Configuration and handshake"):
- no credential → `error` (`invalid_request_error`, code null, "Missing bearer or basic authentication in
  header"), then close 3000 `invalid_request_error`; an unknown model → `invalid_model` ('Model "gpt-nope"
  is not supported in realtime mode.'), a missing model → `missing_model` ("You must provide a model
  parameter, ..."), each then close 4000 `invalid_request_error.<code>`: the public capture of live GA
  traffic "WebSocket captures: Inworld TTS/STT and OpenAI Realtime (2026-09-18)", probes 10b, 11, 11b;
- hurttlocker/o8#2165: the token endpoint accepts an unknown model, the connect then fails `invalid_model`;
- the allow-list is the installed SDK's model literals (`RealtimeSessionCreateRequestParam.model`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args, get_type_hints

import pytest
from openai.types.realtime.realtime_session_create_request_param import RealtimeSessionCreateRequestParam
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtsim.clients.reconnect import FATAL_CLOSE_CODES
from rtsim.simulator.cli import build_parser
from rtsim.simulator.serve import config_from_args
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.session_config import REALTIME_MODELS
from tests.support.engine import validate_ga
from tests.support.wire import KEY, post, recv, ws_url


async def refused_after_upgrade(
    server: RealtimeServer, path: str, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], int, str]:
    """The one event the server sent after the 101, and the close it then sent."""
    async with connect(ws_url(server, path), additional_headers=headers or {}) as ws:
        event = await recv(ws)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert ws.close_code is not None
    return event, ws.close_code, ws.close_reason or ""


async def test_no_credential_is_an_error_event_then_close_3000(server: RealtimeServer) -> None:
    event, code, reason = await refused_after_upgrade(server, "/v1/realtime?model=gpt-realtime")
    validate_ga(event)
    assert event["type"] == "error"
    assert event["error"]["type"] == "invalid_request_error"
    assert event["error"]["code"] is None
    assert event["error"]["message"] == "Missing bearer or basic authentication in header"
    assert (code, reason) == (3000, "invalid_request_error")
    handshake = server.history.select(kind="handshake")[-1]
    assert (handshake["accepted"], handshake["status"], handshake["reason"]) == (
        True,
        101,
        "missing_credential",
    )
    assert not server.carriers and not server.history.select(kind="session")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/realtime?model=gpt-live-1", "invalid_model"),
        ("/v1/realtime?model=gpt-4o", "invalid_model"),
        ("/v1/realtime", "missing_model"),
        ("/v1/realtime?model=", "missing_model"),
    ],
)
async def test_an_unknown_or_missing_model_is_an_error_event_then_close_4000(
    server: RealtimeServer, path: str, code: str
) -> None:
    event, close_code, reason = await refused_after_upgrade(server, path, {"Authorization": f"Bearer {KEY}"})
    validate_ga(event)
    assert event["error"]["type"] == "invalid_request_error"
    assert event["error"]["code"] == code
    if code == "invalid_model":
        model = path.split("=", 1)[1]
        assert event["error"]["message"] == f'Model "{model}" is not supported in realtime mode.'
    else:
        assert event["error"]["message"] == (
            "You must provide a model parameter, for example "
            "wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5"
        )
    assert (close_code, reason) == (4000, f"invalid_request_error.{code}")
    assert server.history.select(kind="handshake")[-1]["reason"] == code
    assert not server.carriers


@pytest.mark.parametrize(
    "model", ["gpt-realtime", "gpt-realtime-2", "gpt-realtime-mini", "gpt-4o-realtime-preview"]
)
async def test_every_known_model_opens_a_session(server: RealtimeServer, model: str) -> None:
    async with connect(
        ws_url(server, f"/v1/realtime?model={model}"), additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        created = await recv(ws)
    assert created["type"] == "session.created" and created["session"]["model"] == model


async def test_models_any_accepts_any_name(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(models="any")
    async with connect(
        ws_url(server, "/v1/realtime?model=my-fine-tune"),
        additional_headers={"Authorization": f"Bearer {KEY}"},
    ) as ws:
        created = await recv(ws)
    assert created["session"]["model"] == "my-fine-tune"


async def test_a_models_list_allows_exactly_those(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(models="house-model, gpt-realtime")
    headers = {"Authorization": f"Bearer {KEY}"}
    async with connect(ws_url(server, "/v1/realtime?model=house-model"), additional_headers=headers) as ws:
        assert (await recv(ws))["type"] == "session.created"
    event, code, _ = await refused_after_upgrade(server, "/v1/realtime?model=gpt-realtime-2", headers)
    assert (event["error"]["code"], code) == ("invalid_model", 4000)


async def test_a_token_minted_for_an_unknown_model_is_refused_at_the_connect(server: RealtimeServer) -> None:
    """hurttlocker/o8#2165: the token endpoint accepts the model; the connect then fails `invalid_model`."""
    status, minted = await post(
        server, "/v1/realtime/client_secrets", {"session": {"type": "realtime", "model": "gpt-live-1"}}
    )
    assert status == 200
    event, code, _ = await refused_after_upgrade(
        server, "/v1/realtime", {"Authorization": f"Bearer {minted['value']}"}
    )
    assert (event["error"]["code"], code) == ("invalid_model", 4000)


async def test_a_token_names_the_model_so_the_url_need_not(server: RealtimeServer) -> None:
    _, minted = await post(
        server, "/v1/realtime/client_secrets", {"session": {"type": "realtime", "model": "gpt-realtime-2"}}
    )
    async with connect(
        ws_url(server, "/v1/realtime"), additional_headers={"Authorization": f"Bearer {minted['value']}"}
    ) as ws:
        created = await recv(ws)
    assert created["session"]["model"] == "gpt-realtime-2"


async def test_azure_deployments_are_not_checked_against_the_openai_names(
    server_factory: Callable[..., Any],
) -> None:
    server = await server_factory(profile="azure")
    path = "/openai/realtime?api-version=2025-08-28&deployment=my-deployment"
    async with connect(ws_url(server, path), additional_headers={"api-key": "sk-azure"}) as ws:
        assert (await recv(ws))["type"] == "session.created"


def test_the_allow_list_is_the_sdks_model_literals() -> None:
    """An SDK upgrade that adds or retires a Realtime model fails here rather than drifting."""
    model_type = get_type_hints(RealtimeSessionCreateRequestParam)["model"]
    literals = {value for arg in get_args(model_type) for value in get_args(arg)}
    assert set(REALTIME_MODELS) == literals


def test_the_reference_clients_treat_3000_and_4000_as_fatal() -> None:
    """A refusal after the 101 cannot be cured by reconnecting: no reconnect storm on 3000 or 4000."""
    assert 3000 in FATAL_CLOSE_CODES and 4000 in FATAL_CLOSE_CODES


def test_serve_takes_models_any() -> None:
    args = build_parser().parse_args(["serve", "--models", "any"])
    assert config_from_args(args).models == "any"
    assert config_from_args(build_parser().parse_args(["serve"])).models == "known"


async def test_bad_frames_are_worded_as_the_live_service_words_them(server: RealtimeServer) -> None:
    """Probe 8 of the 2026-09-18 capture: an unknown event type, invalid JSON and a binary frame each get an
    `error` (param `type` / null, `event_id` null) and the session goes on."""
    async with connect(ws_url(server), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert (await recv(ws))["type"] == "session.created"
        await ws.send('{"type":"nope"}')
        unknown = (await recv(ws))["error"]
        await ws.send("not json")
        not_json = (await recv(ws))["error"]
        await ws.send(b"\x00" * 64)
        binary = (await recv(ws))["error"]
        await ws.send('{"type":"session.update","session":{"type":"realtime","bogus_field":1}}')
        bogus = (await recv(ws))["error"]
        await ws.send('{"type":"session.update","session":{"type":"realtime"}}')
        assert (await recv(ws))["type"] == "session.updated"
    assert (unknown["code"], unknown["param"], unknown["event_id"]) == ("invalid_value", "type", None)
    assert unknown["message"] == (
        "Invalid value: 'nope'. Supported values are: 'session.update', 'session.close', "
        "'input_audio_buffer.append', 'session.input_audio_buffer.append', 'input_audio_buffer.commit', "
        "'input_audio_buffer.clear', 'conversation.item.create', 'conversation.item.truncate', "
        "'conversation.item.delete', 'conversation.item.retrieve', 'response.create', and 'response.cancel'."
    )
    assert (not_json["code"], not_json["param"]) == ("invalid_json", None)
    assert not_json["message"].startswith("Invalid event: failed to parse JSON value.")
    assert binary == {
        "type": "invalid_request_error",
        "code": "invalid_event",
        "message": "Expected a text WebSocket message; binary frames are not supported.",
        "param": None,
        "event_id": None,
    }
    assert (bogus["code"], bogus["message"]) == (
        "unknown_parameter",
        "Unknown parameter: 'session.bogus_field'.",
    )
