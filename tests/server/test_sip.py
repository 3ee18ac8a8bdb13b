"""SIP calls end to end with the official SDK: a call rung through the control API, its signed
`realtime.call.incoming` webhook verified by `client.webhooks.unwrap()`, answered with
`client.realtime.calls.accept/reject/refer/hangup`, and the session joined over WebSocket with `?call_id=`.

Sources: the SDK's `resources/realtime/calls.py` (params, `-> None` returns), the API reference's Calls pages
("Returns 200 OK"), the SIP guide (webhook headers and body, the `?call_id=` WebSocket), the SDK's
`lib/_webhooks.py` (the signature it verifies), openai-agents-python's twilio_sip example (accept inside the
webhook handler; a 404 for a call that no longer exists).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp import ClientSession, web
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from rtsim.simulator.protocol import SIP_EVENT_TYPES
from rtsim.simulator.server import DEFAULT_WEBHOOK_SECRET, RealtimeServer
from tests.support.engine import validate_ga

KEY = "sk-test-key"
OTHER_KEY = "sk-other-project"

Handler = Callable[[RealtimeCallIncomingWebhookEvent], Awaitable[None]]


class WebhookReceiver:
    """The application's webhook endpoint: verifies and parses with the SDK, then runs `on_call`."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self.events: list[RealtimeCallIncomingWebhookEvent] = []
        self.headers: list[Any] = []  # case-insensitive, as the request had them
        self.refusals: list[str] = []
        self.on_call: Handler | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = self.client.webhooks.unwrap(body, request.headers)
        except openai.InvalidWebhookSignatureError as exc:
            self.refusals.append(str(exc))
            return web.Response(status=400)
        assert isinstance(event, RealtimeCallIncomingWebhookEvent)
        self.events.append(event)
        self.headers.append(request.headers.copy())
        if self.on_call is not None:
            await self.on_call(event)
        return web.Response(status=200)


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RealtimeServer:
    return await server_factory(pacing=0.0)


@pytest.fixture
async def client(server: RealtimeServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key=KEY, webhook_secret=DEFAULT_WEBHOOK_SECRET, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
async def receiver(client: openai.AsyncOpenAI) -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver(client)
    app = web.Application()
    app.router.add_post("/openai/webhook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/openai/webhook"
    yield hook
    await runner.cleanup()


async def ring(server: RealtimeServer, **body: Any) -> tuple[int, dict[str, Any]]:
    async with (
        ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}/_rtsim/sip/calls", json=body) as response,
    ):
        return response.status, await response.json()


async def control(server: RealtimeServer, path: str, body: dict[str, Any] | None = None) -> int:
    async with (
        ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}/_rtsim/sip/calls/{path}", json=body or {}) as response,
    ):
        return response.status


def sideband(server: RealtimeServer, call_id: str, key: str = KEY) -> Any:
    return connect(
        f"ws://127.0.0.1:{server.port}/v1/realtime?call_id={call_id}",
        additional_headers={"Authorization": f"Bearer {key}"},
    )


async def next_of(
    ws: ClientConnection, kind: str, seen: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if seen is not None:
            seen.append(event)
        if event["type"] == kind:
            return event


async def test_an_incoming_call_is_accepted_and_its_session_joined_over_websocket(
    server: RealtimeServer, client: openai.AsyncOpenAI, receiver: WebhookReceiver
) -> None:
    async def accept(event: RealtimeCallIncomingWebhookEvent) -> None:
        # As the SIP guide and openai-agents-python's twilio_sip example do: accept inside the handler.
        await client.realtime.calls.accept(
            event.data.call_id,
            type="realtime",
            instructions="You are Alex, a concierge.",
            audio={"output": {"voice": "cedar"}, "input": {"turn_detection": None}},
        )

    receiver.on_call = accept
    headers = [
        {"name": "From", "value": "sip:+14155550123@example.com"},
        {"name": "X-Account", "value": "42"},
    ]
    status, rung = await ring(server, webhook_url=receiver.url, sip_headers=headers)
    assert status == 201 and rung["webhook"]["status"] == 200 and rung["state"] == "accepted"

    (event,) = receiver.events
    assert event.type == "realtime.call.incoming" and event.object == "event"
    assert event.id.startswith("evt_") and event.data.call_id == rung["call_id"]
    assert [(h.name, h.value) for h in event.data.sip_headers] == [(h["name"], h["value"]) for h in headers]
    delivered = receiver.headers[0]
    assert delivered["User-Agent"] == "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
    assert delivered["Webhook-Id"].startswith("wh_")

    async with sideband(server, event.data.call_id) as ws:
        seen: list[dict[str, Any]] = []
        created = await next_of(ws, "session.created", seen)
        assert created["session"]["instructions"] == "You are Alex, a concierge."
        assert created["session"]["audio"]["output"]["voice"] == "cedar"
        assert created["session"]["audio"]["input"]["turn_detection"] is None
        await ws.send(json.dumps({"type": "response.create"}))
        done = await next_of(ws, "response.done", seen)
        assert done["response"]["status"] == "completed"
        # The voice goes down the SIP leg: the socket gets the transcript, never the audio itself.
        kinds = {e["type"] for e in seen}
        assert "response.output_audio_transcript.done" in kinds and "response.output_audio.delta" not in kinds
        assert status == 201 and await control(server, f"{event.data.call_id}/dtmf", {"keys": "4#"}) == 200
        first = await next_of(ws, "input_audio_buffer.dtmf_event_received", seen)
        second = await next_of(ws, "input_audio_buffer.dtmf_event_received", seen)
        assert (first["event"], second["event"]) == ("4", "#")
        assert isinstance(first["received_at"], int) and first["received_at"] > 1_700_000_000
        assert {e["type"] for e in seen} >= SIP_EVENT_TYPES  # every SIP-only kind, each validated below
        for server_event in seen:
            validate_ga(server_event)

        await client.realtime.calls.hangup(event.data.call_id)  # -> None: a 200 with no body
        with pytest.raises(Exception):  # noqa: B017 - the socket closes: websockets' ConnectionClosed*
            await next_of(ws, "never")
        assert ws.close_code == 1000
    close = next(r for r in server.history.select(kind="close") if r.get("transport") == "sip")
    assert (close["by"], close["reason"], close["call_id"]) == ("client", "hangup", event.data.call_id)
    assert close["played_ms"] > 0  # the reply's audio was played on the SIP leg
    assert not server.live_carriers()


async def test_reject_refer_and_the_404s_of_a_call_that_is_gone(
    server: RealtimeServer, client: openai.AsyncOpenAI, receiver: WebhookReceiver
) -> None:
    _, rung = await ring(server, webhook_url=receiver.url)
    call_id = rung["call_id"]
    assert rung["state"] == "ringing"
    await client.realtime.calls.reject(call_id, status_code=486)
    listing = {c["call_id"]: c for c in (await calls(server))}
    assert (listing[call_id]["state"], listing[call_id]["reject_status"]) == ("rejected", 486)
    # Twilio retries a webhook after the caller hung up: the accept then gets a 404 (twilio_sip example).
    with pytest.raises(openai.NotFoundError) as info:
        await client.realtime.calls.accept(call_id, type="realtime")
    assert info.value.body == {
        "message": "No session found for the provided call_id",
        "type": "invalid_request_error",
        "param": "",
        "code": "call_id_not_found",
    }

    _, rung = await ring(server, webhook_url=receiver.url)
    await client.realtime.calls.reject(rung["call_id"])
    assert {c["call_id"]: c for c in await calls(server)}[rung["call_id"]]["reject_status"] == 603

    _, rung = await ring(server, webhook_url=receiver.url)
    call_id = rung["call_id"]
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.refer(call_id, target_uri="tel:+14155550199")  # not accepted yet
    await client.realtime.calls.accept(call_id, type="realtime")
    with pytest.raises(openai.BadRequestError) as bad:
        await client.realtime.calls.refer(call_id, target_uri="mailto:agent@example.com")
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "target_uri"
    async with sideband(server, call_id) as ws:
        await next_of(ws, "session.created")
        await client.realtime.calls.refer(call_id, target_uri="tel:+14155550199")
        with pytest.raises(Exception):  # noqa: B017 - the transferred leg ends: the socket closes
            await next_of(ws, "never")
    state = {c["call_id"]: c for c in await calls(server)}[call_id]
    assert (state["state"], state["refer_to"]) == ("ended", "tel:+14155550199")
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(call_id)
    with pytest.raises(InvalidStatus) as refused:
        await sideband(server, call_id)
    assert refused.value.response.status_code == 404


async def test_a_project_call_is_not_found_by_another_key_and_bad_bodies_are_400s(
    server: RealtimeServer, client: openai.AsyncOpenAI, receiver: WebhookReceiver
) -> None:
    _, rung = await ring(server, webhook_url=receiver.url, key=KEY)
    call_id = rung["call_id"]
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=OTHER_KEY, max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            await other.realtime.calls.accept(call_id, type="realtime")
    with pytest.raises(openai.BadRequestError) as info:
        await client.realtime.calls.accept(
            call_id,
            type="realtime",
            audio={"output": {"voice": "nobody"}},  # type: ignore[typeddict-item]
        )
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "session.audio.output.voice"
    with pytest.raises(openai.BadRequestError) as info:
        await client.realtime.calls.reject(call_id, status_code=200)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "status_code"
    async with (
        ClientSession() as http,
        http.post(
            f"{server.base_url}/realtime/calls/{call_id}/accept", json={"type": "realtime"}
        ) as anonymous,
    ):
        assert anonymous.status == 401 and "API key" in (await anonymous.json())["error"]["message"]
    async with (
        ClientSession() as http,
        http.post(
            f"{server.base_url}/realtime/calls/{call_id}/accept",
            data=b"{not json",
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        ) as garbled,
    ):
        error = (await garbled.json())["error"]
        assert garbled.status == 400 and error["message"].startswith("We could not parse the JSON body")
    # Nothing above changed the call: it still rings, and its own key answers it.
    await client.realtime.calls.accept(call_id, type="realtime")
    assert {c["call_id"]: c for c in await calls(server)}[call_id]["state"] == "accepted"
    assert await control(server, f"{call_id}/dtmf", {"keys": "9x"}) == 400
    assert await control(server, "rtc_nope/dtmf", {"keys": "1"}) == 404
    assert await control(server, f"{call_id}/hangup") == 204
    close = next(r for r in server.history.select(kind="close") if r.get("transport") == "sip")
    assert (close["by"], close["reason"]) == ("caller", "caller_hangup")


async def test_the_webhook_is_signed_with_the_configured_secret(
    server_factory: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    server = await server_factory(pacing=0.0, webhook_secret="whsec_c2VjcmV0LW9mLXRoaXMtcHJvamVjdA==")
    _, rung = await ring(server, webhook_url=receiver.url)
    # The receiver's client holds the default secret: the signature does not match, so it refuses.
    assert rung["webhook"]["status"] == 400 and receiver.refusals and not receiver.events
    async with openai.AsyncOpenAI(
        api_key=KEY, base_url=server.base_url, webhook_secret="whsec_c2VjcmV0LW9mLXRoaXMtcHJvamVjdA=="
    ) as right:
        receiver.client = right
        _, rung = await ring(server, webhook_url=receiver.url)
        assert rung["webhook"]["status"] == 200 and receiver.events[-1].data.call_id == rung["call_id"]
        # A secret given with the ring signs that call's webhook (a plain secret: its UTF-8 bytes, as the
        # SDK keys one); nothing listening at the URL is an outcome, not an error.
        receiver.client = openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url, webhook_secret="plain")
        _, rung = await ring(server, webhook_url=receiver.url, webhook_secret="plain")
        assert rung["webhook"]["status"] == 200
        await receiver.client.close()
    status, rung = await ring(server, webhook_url="http://127.0.0.1:9/unreachable")
    assert status == 201 and rung["webhook"]["status"] is None and "error" in rung["webhook"]
    status, _ = await ring(server, webhook_url="ftp://example.com/")
    assert status == 400


async def test_an_unanswered_call_is_missed(
    server_factory: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    server = await server_factory(pacing=0.0, sip_ring_timeout=0.3)
    _, rung = await ring(server, webhook_url=receiver.url)
    await asyncio.sleep(0.6)
    assert {c["call_id"]: c for c in await calls(server)}[rung["call_id"]]["state"] == "missed"
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError):
            await sdk.realtime.calls.accept(rung["call_id"], type="realtime")


async def calls(server: RealtimeServer) -> list[dict[str, Any]]:
    async with (
        ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/_rtsim/sip/calls") as response,
    ):
        return (await response.json())["calls"]


async def test_the_callers_voice_reaches_the_server_vad_and_gets_a_reply(
    server: RealtimeServer, client: openai.AsyncOpenAI, receiver: WebhookReceiver
) -> None:
    _, rung = await ring(server, webhook_url=receiver.url)
    call_id = rung["call_id"]
    await client.realtime.calls.accept(call_id, type="realtime")  # server VAD, as the default session has
    async with sideband(server, call_id) as ws:
        seen: list[dict[str, Any]] = []
        await next_of(ws, "session.created", seen)
        async with (
            ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{server.port}/_rtsim/sip/calls/{call_id}/say",
                json={"text": "I would like to book a table for two."},
            ) as said,
        ):
            assert said.status == 200 and (await said.json())["queued_s"] > 1
        started = await next_of(ws, "input_audio_buffer.speech_started", seen)
        stopped = await next_of(ws, "input_audio_buffer.speech_stopped", seen)
        assert stopped["audio_end_ms"] - started["audio_start_ms"] > 1000
        done = await next_of(ws, "response.done", seen)  # create_response: the model answers the turn
        assert done["response"]["status"] == "completed"
        for event in seen:
            validate_ga(event)


async def test_rtsim_serve_signs_with_the_secret_it_is_given(
    serve_process: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    """The real process: `rtsim serve --webhook-secret`; the SDK verifies what it sends with that secret and
    answers the call through the process's calls API."""
    secret = "whsec_dGhlLWFwcGxpY2F0aW9ucy1vd24tc2VjcmV0"
    _, base_url = await asyncio.to_thread(serve_process, "--webhook-secret", secret)
    async with openai.AsyncOpenAI(api_key=KEY, base_url=base_url, webhook_secret=secret) as sdk:
        receiver.client = sdk

        async def reject(event: RealtimeCallIncomingWebhookEvent) -> None:
            await sdk.realtime.calls.reject(event.data.call_id, status_code=486)

        receiver.on_call = reject
        async with (
            ClientSession() as http,
            http.post(
                f"{base_url[: -len('/v1')]}/_rtsim/sip/calls", json={"webhook_url": receiver.url}
            ) as rung,
        ):
            outcome = await rung.json()
        assert outcome["webhook"]["status"] == 200 and outcome["state"] == "rejected"
        assert receiver.events[0].data.call_id == outcome["call_id"] and not receiver.refusals
        # The same from the command line: `rtsim sip ring`, then `rtsim sip list`.
        ring_cli = await rtsim(
            "sip", "ring", "--server", base_url, "--webhook-url", receiver.url, "--header", "X-A=1"
        )
        assert ring_cli.returncode == 0, ring_cli.stderr
        call_id, state, *_ = ring_cli.stdout.split()
        assert state == "rejected" and ring_cli.stdout.rstrip().endswith("→ 200")
        assert [(h.name, h.value) for h in receiver.events[-1].data.sip_headers] == [("X-A", "1")]
        listing = await rtsim("sip", "list", "--server", base_url)
        assert f"{call_id}  rejected" in listing.stdout
        refused = await rtsim("sip", "dtmf", call_id, "1", "--server", base_url)
        assert refused.returncode == 1 and "404" in refused.stderr  # a rejected call has no line to press on


async def rtsim(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rtsim.simulator.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_session_cap_ends_a_sip_call(
    server_factory: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    server = await server_factory(pacing=0.0, max_session=1.0)
    _, rung = await ring(server, webhook_url=receiver.url)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as sdk:
        await sdk.realtime.calls.accept(rung["call_id"], type="realtime")
    async with sideband(server, rung["call_id"]) as ws:
        expired = await next_of(ws, "error")
        assert expired["error"]["code"] == "session_expired"
        with pytest.raises(Exception):  # noqa: B017 - the call is over: the socket closes
            await next_of(ws, "never")
    (close,) = [r for r in server.history.select(kind="close") if r.get("transport") == "sip"]
    assert close["by"] == "server" and close["code"] == 1001
    assert {c["call_id"]: c for c in await calls(server)}[rung["call_id"]]["state"] == "ended"
    assert not server.live_carriers()


async def test_keypad_presses_scripted_as_a_fault_at_an_event(
    server: RealtimeServer, client: openai.AsyncOpenAI, receiver: WebhookReceiver
) -> None:
    _, rung = await ring(server, webhook_url=receiver.url)
    await client.realtime.calls.accept(rung["call_id"], type="realtime", output_modalities=["text"])
    async with sideband(server, rung["call_id"]) as ws:
        session_id = (await next_of(ws, "session.created"))["session"]["id"]
        fault = {
            "kind": "dtmf",
            "params": {"keys": "7*"},
            "target": {"session": session_id},
            "when": {"at_event": {"type": "response.done", "nth": 1}},
        }
        async with (
            ClientSession() as http,
            http.post(f"http://127.0.0.1:{server.port}/_rtsim/faults", json=fault) as scheduled,
        ):
            assert scheduled.status == 201
        await ws.send(json.dumps({"type": "response.create"}))
        seen: list[dict[str, Any]] = []
        await next_of(ws, "input_audio_buffer.dtmf_event_received", seen)
        kinds = [e["type"] for e in seen]
        assert kinds.index("response.done") < kinds.index("input_audio_buffer.dtmf_event_received")
        assert (await next_of(ws, "input_audio_buffer.dtmf_event_received"))["event"] == "*"
        # The engine's faults reach SIP sessions as any other: a benign error arrives on the socket.
        async with (
            ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{server.port}/_rtsim/faults",
                json={"kind": "benign-error", "target": {"session": session_id}},
            ) as applied,
        ):
            assert applied.status == 200
        validate_ga(await next_of(ws, "error"))


async def test_accepting_counts_against_the_per_key_session_limit(
    server_factory: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    server = await server_factory(pacing=0.0, max_sessions_per_key=1)
    _, first = await ring(server, webhook_url=receiver.url)
    _, second = await ring(server, webhook_url=receiver.url)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as sdk:
        await sdk.realtime.calls.accept(first["call_id"], type="realtime")
        with pytest.raises(openai.RateLimitError) as info:
            await sdk.realtime.calls.accept(second["call_id"], type="realtime")
        assert isinstance(info.value.body, dict) and info.value.body["code"] == "concurrent_session_limit"
        # The refused call still rings: once the first is over, it can be answered.
        await sdk.realtime.calls.hangup(first["call_id"])
        await sdk.realtime.calls.accept(second["call_id"], type="realtime")
    states = {c["call_id"]: c["state"] for c in await calls(server)}
    assert (states[first["call_id"]], states[second["call_id"]]) == ("ended", "accepted")


async def test_finished_calls_are_forgotten_beyond_a_bound(
    server: RealtimeServer,
    client: openai.AsyncOpenAI,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rtsim.simulator import sip

    monkeypatch.setattr(sip, "MAX_FINISHED_CALLS", 2)
    rejected = []
    for _ in range(4):
        _, rung = await ring(server, webhook_url=receiver.url)
        await client.realtime.calls.reject(rung["call_id"])
        rejected.append(rung["call_id"])
    _, ringing = await ring(server, webhook_url=receiver.url)
    # The two oldest finished calls are gone; the newer ones and the ringing call stay.
    assert [c["call_id"] for c in await calls(server)] == [*rejected[2:], ringing["call_id"]]
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.reject(rejected[0])


def test_sync_simulator_rings_a_call_a_plain_webhook_server_accepts() -> None:
    """The embedding API (`SyncSimulator.ring_sip`) with a blocking app: http.server and the sync SDK."""
    import http.server
    import threading

    import rtsim

    with rtsim.SyncSimulator(pacing=0.0) as sim:
        sdk = openai.OpenAI(base_url=sim.base_url, api_key=sim.api_key, webhook_secret=DEFAULT_WEBHOOK_SECRET)
        answered: list[str] = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event = sdk.webhooks.unwrap(body, dict(self.headers.items()))
                assert isinstance(event, RealtimeCallIncomingWebhookEvent)
                sdk.realtime.calls.accept(event.data.call_id, type="realtime", instructions="Hi from sync.")
                answered.append(event.data.call_id)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        try:
            rung = sim.ring_sip(f"http://127.0.0.1:{hook.server_address[1]}/hook", key=sim.api_key)
        finally:
            hook.shutdown()
            sdk.close()
        assert rung["state"] == "accepted" and answered == [rung["call_id"]]
        assert rung["key_id"] == sim.key_id
        (live,) = sim.sessions()
        assert live["transport"] == "sip" and live["session"] == rung["session"]


async def test_a_redelivered_webhook_is_the_same_event_and_a_second_accept_is_a_404(
    server: RealtimeServer, client: openai.AsyncOpenAI, receiver: WebhookReceiver
) -> None:
    """The platform retries and may deliver a webhook twice; the twilio_sip example treats the accept's 404 on
    the second delivery as "already handled" and still answers 200. Deduplicate by `webhook-id`."""
    outcomes: list[str] = []

    async def accept_once(event: RealtimeCallIncomingWebhookEvent) -> None:
        try:
            await client.realtime.calls.accept(event.data.call_id, type="realtime")
            outcomes.append("accepted")
        except openai.NotFoundError:
            outcomes.append("404")

    receiver.on_call = accept_once
    status, rung = await ring(server, webhook_url=receiver.url, deliveries=2)
    assert status == 201 and rung["webhook"]["status"] == 200 and rung["webhook"]["redeliveries"] == [200]
    assert outcomes == ["accepted", "404"] and rung["state"] == "accepted"
    first, second = receiver.headers
    assert first["webhook-id"] == second["webhook-id"]
    assert receiver.events[0] == receiver.events[1]  # the same event, verified twice
    assert len([r for r in server.history.select(kind="session") if r.get("transport") == "sip"]) == 1
