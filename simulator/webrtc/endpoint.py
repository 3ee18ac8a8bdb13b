"""HTTP side of WebRTC: `POST /v1/realtime/calls`, `POST /v1/realtime/calls/{id}/hangup`, and the sideband.

Auth is the WebSocket path's: `Authorization: Bearer <API key or ek_ token>`; an expired or forged token or an
unknown key is refused with the real 401 JSON body. The offer comes as `application/sdp`, or as multipart with
an `sdp` part and a `session` part (a GA session config, applied like a minted token's config) — what the
official SDK's `client.realtime.calls.create(sdp=..., session=...)` sends. The answer is `201 Created`,
`application/sdp`, `Location: /v1/realtime/calls/<call_id>`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web
from aiortc import sdp as aiortc_sdp

from .. import session_config
from ..engine import Session
from ..faults import retry_after_header
from ..model import ScriptedModel
from ..protocol import IdFactory, RealtimeError
from ..server import RealtimeServer, json_error, masked, read_credential
from ..tokens import TokenError, key_id
from .call import Call, Sideband
from .net import is_loopback_host, use_loopback_candidates

INVALID_OFFER = "Invalid SDP offer. Please try again with a WHIP-compliant offer."
MISSING_CREDENTIAL = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY)."
)


class Refusal(Exception):
    """An HTTP error answer with the real JSON error body."""

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: str | None = None, **fields: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.fields = fields
        self.detail: str | None = None  # what went wrong underneath, for the record (not the client)

    def response(self) -> web.Response:
        return json_error(self.status, self.message, **self.fields)


class Identity:
    """Who a request authenticated as: the key's id, how, and (for ek_ tokens) the token and its session."""

    def __init__(
        self, key_id: str, auth: str, token_id: str | None = None, config: dict[str, Any] | None = None
    ) -> None:
        self.key_id = key_id
        self.auth = auth
        self.token_id = token_id
        self.config = config


class WebRTCEndpoint:
    """The server's WebRTC calls: the routes, the registry, and hooks for the fault control plane."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        if is_loopback_host(server.config.host):
            use_loopback_candidates()
        # Called with each new call before its answer is made: the place to set setup faults
        # (`call.ice_fail_setup = True`, `call.datachannel_delay(s)`).
        self.on_new_call: list[Callable[[Call], None]] = []
        self.background: set[asyncio.Task[Any]] = set()

    # ---- auth ---------------------------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> Identity:
        credential = read_credential(request, azure=self.server.profile.azure)
        if credential.value is None:
            raise Refusal(401, "missing_credential", MISSING_CREDENTIAL)
        if credential.is_token:
            try:
                token = self.server.tokens.verify(credential.value)
            except TokenError as exc:
                raise Refusal(
                    401,
                    f"token_{exc.reason}",
                    "Your ephemeral token is invalid or has expired."
                    if exc.reason != "invalid"
                    else "Invalid ephemeral token provided.",
                    code="invalid_api_key",
                ) from None
            return Identity(token.key_id, "ephemeral", token.token_id, dict(token.session) or None)
        if not self.server.key_is_valid(credential.value):
            raise Refusal(
                401,
                "invalid_api_key",
                f"Incorrect API key provided: {masked(credential.value)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return Identity(key_id(credential.value), "api_key")

    def _take_rejection(self, identity: Identity) -> bool:
        """A pending `reject-connects` fault: refused with its status, or (True) accepted and then ended."""
        faults = getattr(self.server, "faults", None)
        rejection = faults.take_rejection(identity.key_id) if faults is not None else None
        if rejection is None:
            return False
        if rejection.status is not None:
            raise Refusal(
                rejection.status,
                "fault:reject-connects",
                rejection.reason or "The server refused the connection.",
                retry_after=retry_after_header(rejection.retry_after)
                if rejection.retry_after is not None
                else None,
                code="rate_limit_exceeded" if rejection.status == 429 else None,
            )
        return True

    # ---- POST /v1/realtime/calls ---------------------------------------------------------------------

    async def create_call(self, request: web.Request) -> web.Response:
        server = self.server
        conn_id = server._new_conn_id()
        handshake: dict[str, Any] = {
            "conn": conn_id,
            "path": request.path,
            "transport": "webrtc",
            "query": dict(request.query),
        }
        credential = read_credential(request, azure=server.profile.azure).value
        handshake["credential"] = key_id(credential)[4:] if credential else None  # as the WebSocket path
        identity: Identity | None = None
        try:
            identity = self.authenticate(request)
            refused_with_close = self._take_rejection(identity)
            offer, session_update = await read_offer(request)
            check_offer(offer)
            call = self._new_call(request, conn_id, identity, session_update)
            for hook in self.on_new_call:
                hook(call)
            try:
                answer = await call.answer(offer)
            except Exception as exc:  # aiortc refusing the offer (no common codec, bad parameters, ...)
                await call.discard()
                refusal = Refusal(400, "invalid_offer", INVALID_OFFER, code="invalid_offer")
                refusal.detail = repr(exc)
                raise refusal from exc
        except Refusal as refusal:
            server.history.record(
                "handshake",
                **handshake,
                key_id=identity.key_id if identity else None,
                accepted=False,
                status=refusal.status,
                reason=refusal.reason,
                **({"detail": refusal.detail} if refusal.detail else {}),
            )
            response = refusal.response()
            if refusal.retry_after is not None:
                response.headers["Retry-After"] = refusal.retry_after
            return response
        server.history.record(
            "handshake",
            **handshake,
            key_id=identity.key_id,
            auth=identity.auth,
            token_id=identity.token_id,
            accepted=True,
            status=201,
            reason="fault:reject-connects" if refused_with_close else None,
            call_id=call.id,
        )
        session = call.session
        server.history.record(
            "session",
            session=session.id,
            conn=conn_id,
            key_id=identity.key_id,
            model=session.config["model"],
            profile=server.profile.name,
            dialect=session.dialect.name,
            expires_at=session.expires_at,
            deadline_wall=round(session.deadline_wall, 6),
            token_id=identity.token_id,
            transport="webrtc",
            call_id=call.id,
        )
        if refused_with_close:
            # Accepted, then ended as soon as it connects: the WebSocket path's accept-then-close.
            call.hang_up_when_connected = "fault:reject-connects"
        server._apply_plans(request, call)  # --chaos and attached fault plans reach calls as they do sockets
        call.begin()
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call.id}"},
        )

    def _new_call(
        self, request: web.Request, conn_id: str, identity: Identity, session_update: dict[str, Any] | None
    ) -> Call:
        server = self.server
        token_config = dict(identity.config) if identity.config else None
        model_name = (
            request.query.get("model")
            or (session_update or {}).get("model")
            or (token_config or {}).get("model")
            or session_config.DEFAULT_MODEL
        )
        if token_config is not None:
            token_config.pop("model", None)
        ids = IdFactory.seeded(server.config.seed, conn_id)
        call_id = f"rtc_{ids.rng.getrandbits(128):032x}"
        try:
            session = Session(
                ids=ids,
                model=ScriptedModel(server.script, seed=server.config.seed),
                now=asyncio.get_running_loop().time(),
                wall=time.time(),
                limits=server.config.limits(),
                model_name=model_name,
                dialect=server._dialect_for(request),
                initial_config=token_config,
                audio_seed=server.config.seed,
            )
            if session_update is not None:
                # The `session` part configures the call like a minted token's config does.
                update = {k: v for k, v in session_update.items() if k != "model"}
                session.config = session_config.merge_ga(session.config, update)
        except RealtimeError as exc:
            raise Refusal(400, "invalid_session", exc.message, code=exc.code, param=exc.param) from None
        call = Call(
            self,
            call_id=call_id,
            conn_id=conn_id,
            session=session,
            key_id=identity.key_id,
            token_id=identity.token_id,
        )
        server.carriers[session.id] = call
        return call

    # ---- POST /v1/realtime/calls/{call_id}/hangup ------------------------------------------------------

    async def hangup(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        status, identity = 200, None
        try:
            identity = self.authenticate(request)
            call = self._find(call_id, identity)
            await call.close(reason="hangup", by="client")
            response = web.Response(status=200)
        except Refusal as refusal:
            status, response = refusal.status, refusal.response()
        self.server.history.record(
            "http",
            method=request.method,
            path=request.path,
            status=status,
            key_id=identity.key_id if identity else None,
            reason=None if status == 200 else "refused",
        )
        return response

    def _find(self, call_id: str, identity: Identity) -> Call:
        call = self.server.calls.get(call_id)
        if call is None or call.ended or call.key_id != identity.key_id:  # another key's call is not found
            raise Refusal(
                404,
                "call_id_not_found",
                "No session found for the provided call_id",
                code="call_id_not_found",
                param="",
            )
        return call

    # ---- the sideband: GET /v1/realtime?call_id=... --------------------------------------------------------

    async def sideband(self, request: web.Request) -> web.StreamResponse:
        server = self.server
        conn_id = server._new_conn_id()
        handshake = {
            "conn": conn_id,
            "path": request.path,
            "transport": "sideband",
            "query": dict(request.query),
        }
        identity = None
        try:
            identity = self.authenticate(request)
            call = self._find(request.query["call_id"], identity)
        except Refusal as refusal:
            server.history.record(
                "handshake",
                **handshake,
                key_id=identity.key_id if identity else None,
                accepted=False,
                status=refusal.status,
                reason=refusal.reason,
            )
            return refusal.response()
        ws = web.WebSocketResponse(protocols=("realtime",), compress=False, autoping=True)
        await ws.prepare(request)
        server.history.record(
            "handshake",
            **handshake,
            key_id=identity.key_id,
            auth=identity.auth,
            token_id=identity.token_id,
            accepted=True,
            status=101,
            reason=None,
            session=call.session.id,
            call_id=call.id,
        )
        await Sideband(call, ws, conn_id, identity.key_id).run()
        return ws


async def read_offer(request: web.Request) -> tuple[str, dict[str, Any] | None]:
    """The SDP offer and the optional `session` config, from an application/sdp or multipart body."""
    content_type = request.content_type
    if content_type == "application/sdp":
        return await request.text(), None
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
            offer = await part.text()
        elif part.name == "session":
            raw = await part.text()
            try:
                session = json.loads(raw)
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
