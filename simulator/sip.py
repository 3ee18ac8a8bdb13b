"""SIP calls, as the real service runs them: an incoming call rings, a signed `realtime.call.incoming`
webhook tells the application, and the calls API answers it.

    POST /v1/realtime/calls/{id}/accept   the session config (RealtimeSessionCreateRequest) → 200, empty
    POST /v1/realtime/calls/{id}/reject   {"status_code"?: 603 by default}                  → 200, empty
    POST /v1/realtime/calls/{id}/refer    {"target_uri": "tel:…" | "sip:…"}                  → 200, empty
    POST /v1/realtime/calls/{id}/hangup   (shared with WebRTC calls)                          → 200, empty
    GET  /v1/realtime?call_id=…           the accepted call's session over WebSocket (a sideband)

A call not (or no longer) open to the request's key is the 404 `call_id_not_found` every calls route answers.
There is no SIP trunk: the call is rung from the control API (`POST /_rtsim/sip/calls`, see
`simulator/control/routes.py`), which also plays the caller — speech (down the line in 20 ms frames,
silence between), keypad presses (DTMF, sent to the session as `input_audio_buffer.dtmf_event_received`)
and hanging up. The model's audio goes to the SIP leg, so it is played out (its duration counted), not sent
as events; the sideband gets every other event.

The webhook is signed as the Standard Webhooks spec says (the `standardwebhooks` library), which is what
`client.webhooks.unwrap()` verifies; the secret is `--webhook-secret` or one given with the ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from . import audio
from .admission import Admitted, Refusal
from .engine import Session
from .protocol import IdFactory, RealtimeError
from .schema import Int, Obj, Str, check
from .sideband import JoinableCall, Sideband, call_not_found

if TYPE_CHECKING:
    from .server import RealtimeServer

WEBHOOK_USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"  # the SIP guide's example
DEFAULT_REJECT_STATUS = 603  # Decline: the SDK's `reject(status_code=...)` default
DTMF_KEYS = frozenset("0123456789*#ABCD")  # the SDK's InputAudioBufferDtmfEventReceivedEvent
REFER_SCHEMES = ("tel:", "sip:", "sips:")
# A SIP final response that refuses a call: 3xx redirects, 4xx-6xx failures (the real CLI's help for the
# Live API's reject states 300-699).
REJECT_BODY = Obj({"status_code": Int(300, 699)})
REFER_BODY = Obj({"target_uri": Str()}, required=("target_uri",))
# Calls kept for the calls API and `GET /_rtsim/sip/calls`: the live ones, and this many finished ones at
# most (the oldest go first), so ringing calls for days stays within bounded memory.
MAX_FINISHED_CALLS = 10_000
RTP_FRAME_MS = 20  # the SIP leg's packetization: the caller's audio reaches the session 20 ms at a time
RTP_FRAME_BYTES = audio.SAMPLE_RATE * 2 * RTP_FRAME_MS // 1000


@dataclass
class IncomingCall:
    """One SIP call from the moment it rings: `ringing` → `accepted` (→ `ended`) | `rejected` | `missed`."""

    id: str
    key_id: str | None  # the project whose keys may answer; None: any valid key
    sip_headers: list[dict[str, str]]
    created_at: int
    state: str = "ringing"
    carrier: SipCall | None = None
    reject_status: int | None = None
    refer_to: str | None = None
    webhook: dict[str, Any] = field(default_factory=dict)  # the delivery: id, url, status or error

    def describe(self) -> dict[str, Any]:
        return {
            "call_id": self.id,
            "state": self.state,
            "key_id": self.key_id,
            "created_at": self.created_at,
            "sip_headers": self.sip_headers,
            "session": self.carrier.session.id if self.carrier is not None else None,
            "reject_status": self.reject_status,
            "refer_to": self.refer_to,
            "webhook": self.webhook,
        }


class SipCall(JoinableCall):
    """An accepted SIP call's session: events go to the sidebands (held until the first joins); the model's
    audio is played out on the SIP leg."""

    transport = "sip"

    def __init__(
        self, endpoint: SipEndpoint, incoming: IncomingCall, session: Session, conn_id: str, key_id: str
    ) -> None:
        server = endpoint.server
        super().__init__(
            call_id=incoming.id,
            session=session,
            conn_id=conn_id,
            key_id=key_id,
            history=server.history,
            seed=server.config.seed,
        )
        self.endpoint = endpoint
        self.incoming = incoming
        self.unsent: list[dict[str, Any]] = []  # produced before any sideband joined
        self.played_ms = 0.0  # the model's audio sent down the SIP leg
        self.caller_speech = bytearray()  # what the caller is still to say (pcm16 24 kHz)
        self._closing = False
        session.audio_sink = self._model_audio

    def begin(self) -> None:
        self.session.start(self.loop.time())
        self.spawn(self.writer())
        self.spawn(self._caller_line())
        self.pump()

    async def _caller_line(self) -> None:
        """The SIP leg's inbound media: every 20 ms the next 20 ms of the caller's voice, silence when they
        say nothing (a phone line never goes quiet on the wire), into the session and its server VAD."""
        silence = bytes(RTP_FRAME_BYTES)
        started, frames = self.loop.time(), 0
        while True:
            frames += 1
            await asyncio.sleep(max(0.0, started + frames * RTP_FRAME_MS / 1000 - self.loop.time()))
            frame = bytes(self.caller_speech[:RTP_FRAME_BYTES])
            del self.caller_speech[:RTP_FRAME_BYTES]
            self.session.append_audio(
                frame.ljust(RTP_FRAME_BYTES, b"\0") if frame else silence, self.loop.time()
            )
            self.pump()

    def say(self, pcm16: bytes) -> float:
        """The caller speaks (pcm16 24 kHz): it goes down the line after what they are already saying."""
        self.caller_speech.extend(pcm16)
        return len(self.caller_speech) / (audio.SAMPLE_RATE * 2)

    def _model_audio(self, response_id: str, item_id: str, chunk: bytes) -> None:
        run = next((r for r in self.session.responses if r.id == response_id), None)
        g711 = run is not None and run.config["format"]["type"] in ("audio/pcmu", "audio/pcma")
        self.played_ms += len(chunk) / (8 if g711 else 48)  # bytes per ms: 8 kHz × 1 byte, 24 kHz × 2 bytes

    async def _transmit(self, event: dict[str, Any]) -> bool:
        self.history.event("out", self.session.id, event)
        if not self.sidebands:
            self.unsent.append(event)  # what the application sees when its WebSocket joins
            return False
        for sideband in self.sidebands:
            sideband.deliver(event)
        return True

    def join(self, sideband: Sideband) -> None:
        super().join(sideband)
        backlog, self.unsent = self.unsent, []
        for event in backlog:
            sideband.deliver(event)
            self._count_sent(event["type"])

    def dtmf(self, keys: str) -> None:
        """The caller pressed keys on the keypad: one event per key, as the SIP leg reports them."""
        for key in keys:
            self.session.emit(
                {
                    "type": "input_audio_buffer.dtmf_event_received",
                    "event": key,
                    "received_at": int(time.time()),
                }
            )
        self.pump()

    def _on_close_request(self) -> None:
        if self._closing:
            return  # every pump after the request lands here; end once
        self._closing = True
        code, reason = self.session.close_request or (1000, "")
        self.spawn(self._end_after_flush(reason or "session ended", code))

    async def _end_after_flush(self, reason: str, code: int) -> None:
        await asyncio.sleep(0.1)  # the writer hands the last events (the session_expired error) over
        self.end(reason, by="server", code=code)

    def end(self, reason: str, *, by: str, code: int | None = None) -> None:
        """End the call: its close record, then the sidebands close and the carrier is gone."""
        if self.ended:
            return
        self.closed_by = by
        self._finish()
        self.incoming.state = "ended"
        self.record_close(code, reason, by, transport="sip", call_id=self.id, played_ms=round(self.played_ms))
        task = asyncio.ensure_future(self._teardown())
        self.endpoint.background.add(task)
        task.add_done_callback(self.endpoint.background.discard)

    async def _teardown(self) -> None:
        self._cancel_tasks()
        for sideband in list(self.sidebands):
            await sideband.close()
        self.endpoint.server.carriers.pop(self.session.id, None)
        self.done.set()

    async def close(self, code: int = 1000, reason: str = "", *, by: str = "server") -> None:
        self.end(reason or "hangup", by=by)
        await self.done.wait()

    async def shut_down(self, code: int, reason: str) -> None:
        self.end(reason, by="server", code=code)
        await self.done.wait()


class SipEndpoint:
    """The server's SIP side: rung calls, their webhooks, and the calls API routes that answer them."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        self.incoming: dict[str, IncomingCall] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self._rung = 0

    def owns(self, call_id: str) -> bool:
        return call_id in self.incoming

    # ---- ringing (the control API) ----------------------------------------------------------------------

    async def ring(
        self,
        webhook_url: str,
        *,
        sip_headers: list[dict[str, str]] | None = None,
        key_id: str | None = None,
        secret: str | None = None,
        media_security: str | None = None,
        deliveries: int = 1,
    ) -> IncomingCall:
        """A call arrives: it rings, and the webhook is delivered (awaited: its outcome is reported).

        `deliveries` > 1 delivers the same event again (same `webhook-id`, freshly signed), one after the
        other, as the platform's retries and duplicate deliveries do: an application must deduplicate."""
        config = self.server.config
        self._rung += 1
        ids = config.ids(f"sip_{self._rung:06d}")
        call_id = f"rtc_{ids.rng.getrandbits(128):032x}"
        incoming = IncomingCall(
            id=call_id,
            key_id=key_id,
            sip_headers=sip_headers or default_sip_headers(ids),
            created_at=int(time.time()),
        )
        self.incoming[call_id] = incoming
        self._forget_finished()
        self.server.history.record("sip", call_id=call_id, event="ringing", key_id=key_id)
        if config.sip_ring_timeout:
            asyncio.get_running_loop().call_later(config.sip_ring_timeout, self._missed, incoming)
        data: dict[str, Any] = {"call_id": call_id, "sip_headers": incoming.sip_headers}
        if media_security is not None:
            data["sip_media_security"] = media_security
        event = {
            "object": "event",
            "id": ids.new("evt"),
            "type": "realtime.call.incoming",
            "created_at": incoming.created_at,
            "data": data,
        }
        webhook_id = ids.new("wh")
        for attempt in range(deliveries):
            outcome = await self._deliver(webhook_url, event, webhook_id, secret or config.webhook_secret)
            self.server.history.record(
                "sip", call_id=call_id, event="webhook", attempt=attempt + 1, **outcome
            )
            if attempt == 0:
                incoming.webhook = outcome
            else:
                incoming.webhook.setdefault("redeliveries", []).append(outcome["status"])
        return incoming

    async def _deliver(self, url: str, event: dict[str, Any], webhook_id: str, secret: str) -> dict[str, Any]:
        """POST the event, signed; one attempt within --webhook-timeout. Returns the outcome, never raises."""
        payload = json.dumps(event)
        now = datetime.now(tz=UTC)
        headers = {
            "user-agent": WEBHOOK_USER_AGENT,
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer(secret).sign(webhook_id, now, payload),
        }
        outcome: dict[str, Any] = {"id": webhook_id, "url": url, "status": None}
        timeout = aiohttp.ClientTimeout(total=self.server.config.webhook_timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(url, data=payload.encode(), headers=headers) as response,
            ):
                outcome["status"] = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
        return outcome

    def _forget_finished(self) -> None:
        finished = [c.id for c in self.incoming.values() if c.state in ("rejected", "missed", "ended")]
        for call_id in finished[: max(0, len(finished) - MAX_FINISHED_CALLS)]:
            del self.incoming[call_id]  # insertion order: the oldest first

    def _missed(self, incoming: IncomingCall) -> None:
        if incoming.state == "ringing":
            incoming.state = "missed"  # nobody answered: the caller gave up
            self.server.history.record("sip", call_id=incoming.id, event="missed")

    # ---- the calls API --------------------------------------------------------------------------------

    def _find(self, call_id: str, admitted: Admitted, *states: str) -> IncomingCall:
        incoming = self.incoming.get(call_id)
        if incoming is None or incoming.state not in states:
            raise call_not_found()
        if incoming.key_id is not None and incoming.key_id != admitted.key_id:
            raise call_not_found()  # another project's call is not even named
        return incoming

    async def _route(self, request: web.Request, action: Any) -> web.Response:
        """Read the JSON body and act, through the server's call route; a bad body is a 400."""

        async def act(admitted: Admitted) -> None:
            try:
                body = await self.server._json_body(request)  # the REST routes' reading and wording
                await action(request.match_info["call_id"], admitted, body, request)
            except RealtimeError as exc:
                raise Refusal(400, "invalid_request", exc.message, code=exc.code, param=exc.param) from None

        return await self.server.call_route(request, act)

    async def accept(self, request: web.Request) -> web.Response:
        return await self._route(request, self._accept)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._route(request, self._reject)

    async def refer(self, request: web.Request) -> web.Response:
        return await self._route(request, self._refer)

    async def hangup(self, request: web.Request) -> web.Response:
        return await self._route(request, self._hangup)

    async def _accept(
        self, call_id: str, admitted: Admitted, body: dict[str, Any], request: web.Request
    ) -> None:
        incoming = self._find(call_id, admitted, "ringing")
        admission = self.server.admission
        # A new session: the per-key session limit and `reject-connects` apply as to sockets and WebRTC calls.
        admitted = admission.admit(request)
        conn_id = admission.new_conn_id()
        # The body is the session config, validated as `session.update` is (raises RealtimeError).
        session = admission.new_session(
            request, admitted, self.server.config.ids(conn_id), model=body.get("model"), session_update=body
        )
        incoming.state = "accepted"
        carrier = incoming.carrier = SipCall(self, incoming, session, conn_id, admitted.key_id)
        self.server.carriers[session.id] = carrier
        admission.record_session(session, conn_id, admitted, transport="sip", call_id=call_id)
        self.server.history.record("sip", call_id=call_id, event="accepted", session=session.id)
        admission.attach_plans(request, carrier)
        carrier.begin()
        if admitted.close_code is not None:  # accepted, then ended at once (`reject-connects close_code`)
            carrier.end(
                admitted.close_reason or "fault:reject-connects", by="server", code=admitted.close_code
            )

    async def _reject(
        self, call_id: str, admitted: Admitted, body: dict[str, Any], request: web.Request
    ) -> None:
        checked = check(REJECT_BODY, body, "")
        incoming = self._find(call_id, admitted, "ringing")
        incoming.state = "rejected"
        incoming.reject_status = checked.get("status_code", DEFAULT_REJECT_STATUS)
        self.server.history.record(
            "sip", call_id=call_id, event="rejected", status_code=incoming.reject_status
        )

    async def _refer(
        self, call_id: str, admitted: Admitted, body: dict[str, Any], request: web.Request
    ) -> None:
        target = check(REFER_BODY, body, "")["target_uri"].strip()
        if not target.lower().startswith(REFER_SCHEMES):
            raise RealtimeError(
                f"Invalid 'target_uri': expected a tel:, sip: or sips: URI, but got '{target[:80]}' instead.",
                code="invalid_value",
                param="target_uri",
            )
        incoming = self._find(call_id, admitted, "accepted")
        incoming.refer_to = target
        self.server.history.record("sip", call_id=call_id, event="referred", target_uri=target)
        assert incoming.carrier is not None
        # The trunk takes the transfer and drops this leg: the session ends.
        incoming.carrier.end("referred", by="client")

    async def _hangup(
        self, call_id: str, admitted: Admitted, body: dict[str, Any], request: web.Request
    ) -> None:
        incoming = self._find(call_id, admitted, "accepted")
        assert incoming.carrier is not None
        await incoming.carrier.close(reason="hangup", by="client")

    # ---- the sideband and the caller (control API) -----------------------------------------------------

    async def sideband(self, request: web.Request) -> web.StreamResponse:
        admission = self.server.admission
        conn_id = admission.new_conn_id()
        handshake = admission.handshake(request, conn_id, "sideband")
        admitted = None
        try:
            admitted = admission.authenticate(request)
            incoming = self._find(request.query["call_id"], admitted, "accepted")
        except Refusal as refusal:
            admission.record_refusal(handshake, refusal, admitted.key_id if admitted else None)
            return refusal.response()
        call = incoming.carrier
        assert call is not None
        ws = web.WebSocketResponse(protocols=("realtime",), compress=False, autoping=True)
        await ws.prepare(request)
        admission.record_accepted(handshake, admitted, 101, None, session=call.session.id, call_id=call.id)
        await Sideband(call, ws, conn_id, admitted.key_id).run()
        return ws

    def live(self, call_id: str) -> SipCall:
        """The accepted, live call with this id (for the caller's actions); RealtimeError if there is none."""
        incoming = self.incoming.get(call_id)
        if incoming is None or incoming.state != "accepted" or incoming.carrier is None:
            raise RealtimeError(
                f"No accepted SIP call '{call_id}'.", code="session_not_found", param="call_id"
            )
        return incoming.carrier

    def press(self, call_id: str, keys: str) -> None:
        if not keys or any(key not in DTMF_KEYS for key in keys):
            raise RealtimeError(
                f"Invalid 'keys': expected keypad keys (0-9, *, #, A-D), but got '{keys[:50]}' instead.",
                code="invalid_value",
                param="keys",
            )
        self.live(call_id).dtmf(keys)

    def say(self, call_id: str, text: str) -> float:
        """The caller says `text` (synthesized speech); returns the seconds of speech now queued."""
        call = self.live(call_id)
        return call.say(audio.speech_for_text(text, seed=self.server.config.seed))

    async def caller_hangs_up(self, call_id: str) -> None:
        await self.live(call_id).close(reason="caller_hangup", by="caller")

    async def stop(self) -> None:
        if self.background:
            await asyncio.wait(list(self.background), timeout=5)
        for task in self.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def default_sip_headers(ids: IdFactory) -> list[dict[str, str]]:
    """The INVITE headers of a call nobody described: the SIP guide's example's three."""
    return [
        {"name": "From", "value": "sip:+14155550123@sip.example.com"},
        {"name": "To", "value": "sip:+18005550100@sip.example.com"},
        {"name": "Call-ID", "value": f"{ids.rng.getrandbits(64):016x}@sip.example.com"},
    ]


def signer(secret: str) -> Webhook:
    """A Standard Webhooks signer keyed as the SDK's verifier keys it: a `whsec_` secret is base64, any other
    is its UTF-8 bytes (the library alone would base64-decode those too)."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())
