"""HTTP side of WebRTC: `POST /v1/realtime/calls`, `POST /v1/realtime/calls/{id}/hangup`, and the sideband.

Admission is the WebSocket path's (`simulator/admission.py`): `Authorization: Bearer <API key or ek_ token>`;
an expired or forged token or an unknown key is refused with the real 401 JSON body, and `reject-connects`,
the per-key session limit and attached fault plans apply to calls as to sockets. The offer comes as
`application/sdp`, or as multipart with an `sdp` part and a `session` part (a GA session config, applied
like a minted token's config) — what the official SDK's `client.realtime.calls.create(sdp=..., session=...)`
sends. The answer is `201 Created`, `application/sdp`, `Location: /v1/realtime/calls/<call_id>`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web
from aiortc import sdp as aiortc_sdp

from ..admission import Admitted, Refusal
from ..protocol import RealtimeError, loads_strict
from ..sideband import Sideband, call_not_found
from .call import Call
from .net import is_loopback_host

if TYPE_CHECKING:
    from ..server import RealtimeServer

INVALID_OFFER = "Invalid SDP offer. Please try again with a WHIP-compliant offer."


class WebRTCEndpoint:
    """The server's WebRTC side: call creation, hangup, the sideband, and the fault control plane's hooks."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        self.loopback = is_loopback_host(server.config.host)  # calls gather candidates on loopback only
        # Called with each new call before its answer is made: the place to set setup faults
        # (`call.fail_ice_setup()`, `call.datachannel_delay(s)`).
        self.on_new_call: list[Callable[[Call], None]] = []
        self.background: set[asyncio.Task[Any]] = set()  # call teardowns, which outlive the call's own tasks

    # ---- POST /v1/realtime/calls ---------------------------------------------------------------------

    async def create_call(self, request: web.Request) -> web.Response:
        admission = self.server.admission
        conn_id = admission.new_conn_id()
        handshake = admission.handshake(request, conn_id, "webrtc")
        admitted: Admitted | None = None
        try:
            admitted = admission.admit(request)
            offer, session_update = await read_offer(request)
            check_offer(offer)
            call = self._new_call(request, conn_id, admitted, session_update)
            for hook in self.on_new_call:
                hook(call)
            try:
                answer = await call.answer(offer)
            except Exception as exc:  # aiortc refusing the offer (no common codec, bad parameters, ...)
                await call.discard()
                refusal = Refusal(400, "invalid_offer", INVALID_OFFER, code="invalid_offer")
                refusal.detail = repr(exc)
                raise refusal from exc
            except BaseException:  # the request was cancelled mid-answer: leave no call behind
                call._spawn_outliving(call.discard())
                raise
        except Refusal as refusal:
            admission.record_refusal(handshake, refusal, admitted.key_id if admitted else None)
            return refusal.response()
        refused_with_close = admitted.close_code is not None
        admission.record_accepted(
            handshake,
            admitted,
            201,
            "fault:reject-connects" if refused_with_close else None,
            call_id=call.id,
        )
        admission.record_session(call.session, conn_id, admitted, transport="webrtc", call_id=call.id)
        if refused_with_close:
            # Accepted, then ended as soon as it connects: the WebSocket path's accept-then-close.
            call.hang_up_when_connected = "fault:reject-connects"
        admission.attach_plans(request, call)
        call.begin()
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call.id}"},
        )

    def _new_call(
        self, request: web.Request, conn_id: str, admitted: Admitted, session_update: dict[str, Any] | None
    ) -> Call:
        server = self.server
        ids = server.config.ids(conn_id)
        call_id = f"rtc_{ids.rng.getrandbits(128):032x}"
        try:
            session = server.admission.new_session(
                request,
                admitted,
                ids,
                model=request.query.get("model") or (session_update or {}).get("model"),
                session_update=session_update,  # configures the call as a minted token's config does
            )
        except RealtimeError as exc:
            raise Refusal(400, "invalid_session", exc.message, code=exc.code, param=exc.param) from None
        call = Call(
            self,
            call_id=call_id,
            conn_id=conn_id,
            session=session,
            key_id=admitted.key_id,
            token_id=admitted.token_id,
        )
        server.carriers[session.id] = call
        return call

    # ---- POST /v1/realtime/calls/{call_id}/hangup ------------------------------------------------------

    async def hangup(self, request: web.Request) -> web.Response:
        async def act(admitted: Admitted) -> None:
            await self._find(request.match_info["call_id"], admitted).close(reason="hangup", by="client")

        return await self.server.call_route(request, act)

    def _find(self, call_id: str, admitted: Admitted) -> Call:
        call = self.server.calls.get(call_id)
        if call is None or call.ended or call.key_id != admitted.key_id:  # another key's call is not found
            raise call_not_found()
        return call

    # ---- the sideband: GET /v1/realtime?call_id=... --------------------------------------------------------

    async def sideband(self, request: web.Request) -> web.StreamResponse:
        admission = self.server.admission
        conn_id = admission.new_conn_id()
        handshake = admission.handshake(request, conn_id, "sideband")
        admitted = None
        try:
            admitted = admission.authenticate(request)
            call = self._find(request.query["call_id"], admitted)
        except Refusal as refusal:
            admission.record_refusal(handshake, refusal, admitted.key_id if admitted else None)
            return refusal.response()
        ws = web.WebSocketResponse(protocols=("realtime",), compress=False, autoping=True)
        await ws.prepare(request)
        admission.record_accepted(handshake, admitted, 101, None, session=call.session.id, call_id=call.id)
        await Sideband(call, ws, conn_id, admitted.key_id).run()
        return ws


async def read_offer(request: web.Request) -> tuple[str, dict[str, Any] | None]:
    """The SDP offer and the optional `session` config, from an application/sdp or multipart body."""
    content_type = request.content_type
    if content_type == "application/sdp":
        return _utf8_offer(await request.read()), None
    if content_type != "multipart/form-data":
        raise Refusal(
            400,
            "unsupported_content_type",
            f"Unsupported content type: '{content_type}'. Send the SDP offer as application/sdp, or as "
            "multipart/form-data with 'sdp' and 'session' parts.",
            code="unsupported_content_type",
        )
    offer: str | None = None
    session: dict[str, Any] | None = None
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart is not something the API takes
        if part.name == "sdp":
            offer = _utf8_offer(await part.read(decode=True))
        elif part.name == "session":
            raw = await part.read(decode=True)
            try:
                session = loads_strict(raw)
            except ValueError:
                raise Refusal(
                    400,
                    "invalid_session",
                    "We could not parse the JSON body of the 'session' part.",
                    code="invalid_json",
                    param="session",
                ) from None
            if not isinstance(session, dict):
                raise Refusal(
                    400,
                    "invalid_session",
                    "Invalid type for 'session': expected an object.",
                    code="invalid_type",
                    param="session",
                )
    if offer is None:
        raise Refusal(
            400,
            "missing_sdp",
            "Missing required parameter: 'sdp'.",
            code="missing_required_parameter",
            param="sdp",
        )
    return offer, session


def _utf8_offer(raw: bytes | bytearray) -> str:
    """SDP is UTF-8 text (RFC 8866); other bytes are a bad offer, not a server error."""
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "invalid_offer", INVALID_OFFER, code="invalid_offer") from None


def check_offer(offer: str) -> None:
    """Refuse what cannot become a call: unparsable SDP, no audio section, no ICE credentials/fingerprint."""
    try:
        description = aiortc_sdp.SessionDescription.parse(offer)
    except Exception:
        raise Refusal(400, "invalid_offer", INVALID_OFFER, code="invalid_offer") from None
    if not any(media.kind == "audio" for media in description.media):
        raise Refusal(400, "no_audio", INVALID_OFFER, code="invalid_offer")
    for media in description.media:
        ice, dtls = media.ice, media.dtls
        if not (ice and ice.usernameFragment and ice.password) or not (dtls and dtls.fingerprints):
            raise Refusal(400, "invalid_offer", INVALID_OFFER, code="invalid_offer")
