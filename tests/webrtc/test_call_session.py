"""A WebRTC call's session: the `session` part (and the token's config) configure it fully, through the same
validation as `session.update`; a re-offer on a live call has nowhere to go (no ICE restart), as on the real
service (see docs/parity.md, "WebRTC calls").
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from rtsim.clients.webrtc_call import ClientCall
from rtsim.simulator import audio
from rtsim.simulator.server import RealtimeServer
from tests.support.engine import validate_ga

KEY = "sk-test-key"
SPEECH_AFTER_MS = 800  # the caller's utterance starts this far into its audio


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RealtimeServer:
    return await server_factory(pacing=0.0)


async def open_call(
    server: RealtimeServer, session: dict[str, Any] | None, credential: str = KEY
) -> ClientCall:
    call = ClientCall(server.base_url, credential, session=session)
    await call.connect()
    await call.wait_for("session.created")
    return call


async def speak(call: ClientCall) -> None:
    """The caller says one utterance after SPEECH_AFTER_MS of silence, then falls silent."""
    assert call.mic is not None
    utterance = audio.build_utterance(
        [("silence", SPEECH_AFTER_MS), ("speech", 900), ("silence", 1200)], seed=4
    )
    seconds = call.mic.say(utterance.pcm)
    await asyncio.sleep(seconds + 0.5)


def turn_detection(event: dict[str, Any]) -> Any:
    return event["session"]["audio"]["input"]["turn_detection"]


async def test_the_session_part_turns_server_vad_off(server: RealtimeServer) -> None:
    call = await open_call(server, {"type": "realtime", "audio": {"input": {"turn_detection": None}}})
    assert turn_detection(call.received[0]) is None
    session = server.calls[call.call_id].session
    buffered = len(session.input_buffer)
    await speak(call)
    # The audio arrives, but with turn detection off nothing detects speech (before: the VAD built from the
    # defaults ran anyway and started a turn).
    assert len(session.input_buffer) > buffered
    assert "input_audio_buffer.speech_started" not in call.types()
    await call.close()


async def test_the_session_parts_vad_parameters_drive_the_detector(server: RealtimeServer) -> None:
    detection = {
        "type": "server_vad",
        "prefix_padding_ms": 0,
        "silence_duration_ms": 300,
        "create_response": False,
    }
    call = await open_call(server, {"type": "realtime", "audio": {"input": {"turn_detection": detection}}})
    assert {
        "prefix_padding_ms": 0,
        "silence_duration_ms": 300,
        "create_response": False,
    }.items() <= turn_detection(call.received[0]).items()
    await speak(call)
    started = await call.wait_for("input_audio_buffer.speech_started", timeout=5)
    await call.wait_for("input_audio_buffer.committed", timeout=5)
    # No prefix padding: the turn starts where the speech does (the default pads 300 ms before it).
    assert abs(started["audio_start_ms"] - SPEECH_AFTER_MS) <= 120
    await asyncio.sleep(0.5)
    assert "response.created" not in call.types()  # create_response: false is obeyed
    for event in call.received:
        validate_ga(event)
    await call.close()


async def test_a_tokens_turn_detection_applies_too(server: RealtimeServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY) as client:
        minted = await client.realtime.client_secrets.create(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
    call = await open_call(server, None, credential=minted.value)
    assert turn_detection(call.received[0]) is None
    await speak(call)
    assert "input_audio_buffer.speech_started" not in call.types()
    await call.close()


async def offer(server: RealtimeServer) -> tuple[ClientCall, str]:
    probe = ClientCall(server.base_url, KEY)
    assert probe.mic is not None
    probe.pc.addTrack(probe.mic)
    await probe.pc.setLocalDescription(await probe.pc.createOffer())
    return probe, probe.pc.localDescription.sdp


@pytest.mark.parametrize(
    ("session", "param"),
    [
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}},
            },
            "session.audio.input.turn_detection.threshold",
        ),
        (
            {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "loud_vad"}}}},
            "session.audio.input.turn_detection.type",
        ),
        ({"type": "realtime", "audio": {"output": {"speed": 9}}}, "session.audio.output.speed"),
        ({"type": "realtime", "bogus": 1}, "session.bogus"),
    ],
)
async def test_an_invalid_session_part_is_the_session_update_error_as_a_400(
    server: RealtimeServer, session: dict[str, Any], param: str
) -> None:
    probe, sdp = await offer(server)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.realtime.calls.create(sdp=sdp, session=session)  # type: ignore[arg-type]
    error = info.value.body
    assert info.value.status_code == 400
    assert isinstance(error, dict) and error["type"] == "invalid_request_error" and error["param"] == param
    assert not server.calls and not server.history.select(kind="session")
    await probe.close()


async def test_a_session_part_error_is_the_real_400_body(server: RealtimeServer) -> None:
    """The real service's 400 for a beta-style format in a REST session config (openai-go#502, captured from
    `POST /v1/realtime/client_secrets`): the same body for the call's session part."""
    probe, sdp = await offer(server)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.realtime.calls.create(
                sdp=sdp,
                session={"type": "realtime", "audio": {"input": {"format": "pcm16"}}},  # type: ignore[typeddict-item]
            )
    assert info.value.body == {
        "message": "Invalid type for 'session.audio.input.format': expected an object, but got a string "
        "instead.",
        "type": "invalid_request_error",
        "param": "session.audio.input.format",
        "code": "invalid_type",
    }
    await probe.close()


async def test_a_nan_threshold_is_refused_not_answered(server: RealtimeServer) -> None:
    """Python's json.dumps writes NaN as a bare `NaN` (the SDK refuses to encode it; a hand-built form does
    not): that part is not JSON, and the call is refused with a JSON 400 instead of the 201 it once got."""
    probe, sdp = await offer(server)
    detection = {"type": "server_vad", "threshold": math.nan}
    form = aiohttp.FormData()
    form.add_field("sdp", sdp, content_type="application/sdp")
    form.add_field(
        "session",
        json.dumps({"type": "realtime", "audio": {"input": {"turn_detection": detection}}}),
        content_type="application/json",
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.base_url}/realtime/calls", data=form, headers={"Authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        body = json.loads(await response.text())
    assert response.status == 400
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "session"
    assert not server.calls
    await probe.close()


# ---- ICE restart: the calls API has no way to carry a re-offer --------------------------------------------


async def test_a_re_offer_cannot_restart_ice_on_a_live_call(server: RealtimeServer) -> None:
    call = await open_call(server, {"type": "realtime", "instructions": "First call."})
    first_session = call.received[0]["session"]["id"]
    assert call.location is not None
    restart = await call.pc.createOffer()  # what a browser's restartIce() would send: new ICE credentials
    async with aiohttp.ClientSession() as http:
        # WHIP (RFC 9725) carries an ICE restart as a PATCH of the call's resource; the real calls API has no
        # such route (create / accept / reject / refer / hangup only), so it is an unknown URL.
        for method in ("PATCH", "POST", "GET", "DELETE"):
            async with http.request(
                method,
                f"http://127.0.0.1:{server.port}{call.location}",
                data=restart.sdp,
                headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/trickle-ice-sdpfrag"},
            ) as response:
                body = json.loads(await response.text())
            assert response.status == 404
            assert body["error"]["code"] == "unknown_url"
            assert body["error"]["message"].startswith(f"Unknown request URL: {method} {call.location}.")
    # Posting the re-offer to /calls makes a second call with a new session; the live one is untouched.
    second = ClientCall(server.base_url, KEY)
    await second.connect()
    created = await second.wait_for("session.created")
    assert created["session"]["id"] != first_session and second.call_id != call.call_id
    assert created["session"]["instructions"] != "First call."  # a new session: nothing carried over
    assert call.call_id in server.calls and not server.calls[call.call_id].ended
    await asyncio.gather(call.close(), second.close())
