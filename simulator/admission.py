"""One admission path for every transport: credential → an admitted identity, or a refusal.

The WebSocket handshake, WebRTC call creation and the sideband all come through here: the credential
(`Authorization: Bearer`, Azure's `api-key`, the browser subprotocol), key and token verification, the
`reject-connects` rules (a refusal with a status, or accept-then-close), `--max-sessions-per-key` counted
over every live carrier of the key whatever its transport, the session's construction (with the identity's
`audio_turns`, so scripted transcripts continue across a client's sessions), the fault plans attached to a
new carrier, and the handshake and session records.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import session_config
from .carrier import Carrier
from .dialect import BETA, Dialect
from .engine import Session, transcription
from .faults import retry_after_header
from .model import ScriptedModel
from .protocol import IdFactory
from .tokens import TOKEN_PREFIX, TokenError, key_id

if TYPE_CHECKING:
    from .server import RealtimeServer

STATUS_TEXT = {
    401: "Incorrect API key provided.",
    403: "You are not allowed to access this model.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}
MISSING_CREDENTIAL = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY)."
)
# What the real GA WebSocket answers after the 101 to a connection it will not serve: an `error` event with
# this code and message, then this close, in the same millisecond (the live captures of 2026-09-18 cited in
# docs/parity.md).
MISSING_CREDENTIAL_REFUSAL = (
    (None, "Missing bearer or basic authentication in header"),
    (3000, "invalid_request_error"),
)
MISSING_MODEL = (
    "You must provide a model parameter, for example wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5"
)
MODEL_CLOSE = 4000


def invalid_model_message(model: str) -> str:
    return f'Model "{model}" is not supported in realtime mode.'


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def json_error(status: int, message: str, **fields: Any) -> web.Response:
    return web.json_response(error_body(message, **fields), status=status)


def masked(key: str) -> str:
    return key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "*" * len(key)


def incorrect_key_message(key: str) -> str:
    return (
        f"Incorrect API key provided: {masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


class Credential:
    """Who is asking: an API key or an ephemeral token, from a header or a browser subprotocol."""

    def __init__(self, value: str | None, source: str) -> None:
        self.value = value
        self.source = source

    @property
    def is_token(self) -> bool:
        return bool(self.value and self.value.startswith(TOKEN_PREFIX))


def read_credential(request: web.Request, *, azure: bool) -> Credential:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return Credential(auth[7:].strip(), "bearer")
    if azure and request.headers.get("api-key"):
        return Credential(request.headers["api-key"].strip(), "api-key")
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith("openai-insecure-api-key."):
            return Credential(proto[len("openai-insecure-api-key.") :], "subprotocol")
    return Credential(None, "none")


class Refusal(Exception):
    """A refused handshake: the HTTP status and the real JSON error body, and the reason for the record."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        key_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.key_id = key_id
        self.detail: str | None = None  # what went wrong underneath, for the record (not the client)

    @property
    def retry_after_header(self) -> str | None:
        return retry_after_header(self.retry_after) if self.retry_after is not None else None

    def response(self) -> web.Response:
        response = json_error(self.status, self.message, code=self.code, param=self.param)
        if (header := self.retry_after_header) is not None:
            response.headers["Retry-After"] = header
        return response


@dataclass
class Admitted:
    """Who a handshake authenticated as: the key's id, how, and (for ek_ tokens) the token and its session."""

    key_id: str
    auth: str  # "api_key" | "ephemeral"
    token_id: str | None = None
    config: dict[str, Any] | None = None  # the minted token's session config
    key_is_known: bool = True  # False: an unknown API key the WebSocket accepts, reports, and closes
    close_code: int | None = None  # a `reject-connects` rule: accepted, then closed with this code
    close_reason: str = ""


class Admission:
    """The server's admission rules and the per-identity state they keep (`audio_turns`)."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        self.audio_turns: dict[str, Iterator[int]] = {}  # per client identity: the script's next transcript
        self.handshakes = 0

    def new_conn_id(self) -> str:
        """The id of a new handshake (connection, call or sideband), numbered in arrival order."""
        self.handshakes += 1
        worker = self.server.config.worker
        return f"conn_{self.handshakes:06d}" if worker is None else f"conn_w{worker}_{self.handshakes:06d}"

    def credential(self, request: web.Request) -> Credential:
        return read_credential(request, azure=self.server.profile.azure)

    def key_is_valid(self, key: str) -> bool:
        api_keys = self.server.config.api_keys
        return key in api_keys if api_keys else key.startswith("sk-")

    def handshake(self, request: web.Request, conn_id: str, transport: str) -> dict[str, Any]:
        """The fields every handshake record of this request starts with."""
        credential = self.credential(request).value
        return {
            "conn": conn_id,
            "path": request.path,
            "transport": transport,
            "query": dict(request.query),
            "credential": key_id(credential)[4:] if credential else None,
        }

    # ---- the checks ---------------------------------------------------------------------------------

    def authenticate(self, request: web.Request, *, unknown_key_refused: bool = True) -> Admitted:
        """Key or token verified; an unknown API key is refused (401), or admitted as not known."""
        credential = self.credential(request)
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
            return Admitted(token.key_id, "ephemeral", token.token_id, dict(token.session) or None)
        known = self.key_is_valid(credential.value)
        if not known and unknown_key_refused:
            raise Refusal(
                401, "invalid_api_key", incorrect_key_message(credential.value), code="invalid_api_key"
            )
        return Admitted(key_id(credential.value), "api_key", key_is_known=known)

    def admit(self, request: web.Request, *, unknown_key_refused: bool = True) -> Admitted:
        """A new session's admission: authenticated, `reject-connects`, then the per-key session limit."""
        admitted = self.authenticate(request, unknown_key_refused=unknown_key_refused)
        identity = admitted.key_id
        rejection = self.server.faults.take_rejection(identity)
        if rejection is not None and rejection.status is not None:
            raise Refusal(
                rejection.status,
                "fault:reject-connects",
                rejection.reason or STATUS_TEXT.get(rejection.status, "The server refused the connection."),
                code="rate_limit_exceeded" if rejection.status == 429 else None,
                retry_after=rejection.retry_after,
                key_id=identity,
            )
        limit = self.server.config.max_sessions_per_key
        if limit is not None and admitted.key_is_known:
            open_sessions = self.server.live_carriers(identity)
            if len(open_sessions) >= limit:
                listed = ", ".join(f"{c.session.id} (open {_age(c):.0f} s)" for c in open_sessions)
                raise Refusal(
                    429,
                    "concurrent_session_limit",
                    f"Concurrent session limit reached: {len(open_sessions)} of {limit} sessions are "
                    f"still open for this key: {listed}. Close sessions you no longer use.",
                    code="concurrent_session_limit",
                    key_id=identity,
                )
        if rejection is not None and rejection.close_code is not None:
            admitted.close_code, admitted.close_reason = rejection.close_code, rejection.reason
        return admitted

    # ---- the session --------------------------------------------------------------------------------

    @staticmethod
    def asks_for_beta(request: web.Request) -> bool:
        beta_header = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        beta_proto = "openai-beta.realtime-v1" in request.headers.get("Sec-WebSocket-Protocol", "")
        return beta_header or beta_proto

    def model_refusal(self, request: web.Request, admitted: Admitted) -> tuple[str, str] | None:
        """`(code, message)` when the real service would refuse the session's model after the 101, else None.

        The model is the URL's `model` or the ephemeral token's; an API-key connection without one is
        `missing_model`, a name outside the server's allow-list (`--models`) `invalid_model`. Azure's
        deployments are named by their owner, and a transcription session names its model in
        `session.update`, so neither is checked here.
        """
        if self.server.profile.azure or request.query.get("intent") == "transcription":
            return None
        model = request.query.get("model") or (admitted.config or {}).get("model")
        if not model:
            # A token's session without a model gets the default one, as the token endpoint gives it.
            return None if admitted.auth == "ephemeral" else ("missing_model", MISSING_MODEL)
        allowed = self.server.config.allowed_models()
        if allowed is not None and model not in allowed:
            return "invalid_model", invalid_model_message(model)
        return None

    def asks_for_disabled_beta(self, request: web.Request) -> bool:
        """A beta header or subprotocol on the OpenAI GA profile, where the real service refuses the shape."""
        return self.server.profile.name == "openai" and self.asks_for_beta(request)

    def dialect_for(self, request: web.Request) -> Dialect:
        """Beta for `--profile openai-beta`, and on Azure for a beta header or a preview api-version."""
        profile = self.server.profile
        azure_preview = profile.azure and request.query.get("api-version", "").endswith("-preview")
        if profile.azure and (self.asks_for_beta(request) or azure_preview):
            return BETA
        return profile.dialect

    def new_session(
        self,
        request: web.Request,
        admitted: Admitted,
        ids: IdFactory,
        *,
        model: str | None = None,
        session_update: dict[str, Any] | None = None,
        session_type: str = "realtime",
    ) -> Session:
        """The engine session of an admitted handshake: its model, dialect, the token's config, then the
        request's own `session_update` (a WebRTC call's `session` part); raises RealtimeError if invalid."""
        server = self.server
        token_config = dict(admitted.config) if admitted.config else None
        model_name = model or (token_config or {}).get("model") or session_config.DEFAULT_MODEL
        if token_config is not None:
            token_config.pop("model", None)
            if token_config.get("type") == "transcription":
                session_type = "transcription"  # a token minted for a transcription session opens one
            elif session_type == "transcription":
                token_config = None  # a realtime session's token configures nothing of a transcription one
        session = Session(
            ids=ids,
            model=ScriptedModel(server.script, seed=server.config.seed),
            now=asyncio.get_running_loop().time(),
            wall=time.time(),
            limits=server.config.limits(),
            model_name=model_name,
            dialect=self.dialect_for(request),
            initial_config=token_config,
            audio_seed=server.config.seed,
            audio_turns=self.audio_turns.setdefault(admitted.key_id, itertools.count()),
            session_type=session_type,
        )
        if session_update is not None:
            update = {k: v for k, v in session_update.items() if k != "model"}
            merge = transcription.merge if session.is_transcription else session_config.merge_ga
            session.config = merge(session.config, update)
        return session

    def attach_plans(self, request: web.Request, carrier: Carrier) -> None:
        """The server's --chaos plan, then any plan the client attached (header or query parameter)."""
        control = self.server.control
        assert control is not None
        if self.server.chaos is not None:
            control.apply_plan(self.server.chaos, carrier, "plan:server")
        attached = request.headers.get("X-Rtsim-Chaos") or request.query.get("rtsim_chaos")
        if attached:
            control.attach_plan(attached, carrier)

    # ---- the records --------------------------------------------------------------------------------

    def record_refusal(self, handshake: dict[str, Any], refusal: Refusal, key_id: str | None = None) -> None:
        header = refusal.retry_after_header
        self.server.history.record(
            "handshake",
            **handshake,
            key_id=refusal.key_id or key_id,
            accepted=False,
            status=refusal.status,
            reason=refusal.reason,
            retry_after=int(header) if header else None,
            **({"detail": refusal.detail} if refusal.detail else {}),
        )

    def record_accepted(
        self,
        handshake: dict[str, Any],
        admitted: Admitted | None,
        status: int,
        reason: str | None,
        **extra: Any,
    ) -> None:
        """An accepted upgrade; `admitted` is None when there was no credential to admit (then refused)."""
        self.server.history.record(
            "handshake",
            **handshake,
            key_id=admitted.key_id if admitted else None,
            auth=admitted.auth if admitted else None,
            token_id=admitted.token_id if admitted else None,
            accepted=True,
            status=status,
            reason=reason,
            **extra,
        )

    def record_session(self, session: Session, conn_id: str, admitted: Admitted, **extra: Any) -> None:
        self.server.history.record(
            "session",
            session=session.id,
            conn=conn_id,
            key_id=admitted.key_id,
            model=session.config.get("model"),
            profile=self.server.profile.name,
            dialect=session.dialect.name,
            expires_at=session.expires_at,
            deadline_wall=round(session.deadline_wall, 6),
            token_id=admitted.token_id,
            **extra,
        )


def _age(carrier: Carrier) -> float:
    return carrier.loop.time() - carrier.session.started_at
