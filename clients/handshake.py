"""Opening one WebSocket session: the upgrade with an ephemeral token, then `session.created`.

Every failure leaves as `Retry` or `Fatal`: a 401 earns one fresh token and is fatal the second time, 401/403
after that and a close 1008/3000 are fatal, a 429 carries its Retry-After, anything else is worth a retry.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from rtsim.clients.common import ClientEnv, JsonLog
from rtsim.clients.reconnect import FATAL_CLOSE_CODES, Fatal, Retry, error_message, parse_retry_after
from rtsim.clients.tokens import TokenSource

CLOSE_TIMEOUT = 1.0  # seconds to wait for the server's close frame; a stalled peer never sends one


async def handshake(
    env: ClientEnv,
    tokens: TokenSource,
    log: JsonLog,
    *,
    purpose: str,
    open_timeout: float,
    ping_interval: float,
    ping_timeout: float,
) -> ClientConnection:
    """The WebSocket upgrade with an ephemeral token: a 401 earns one fresh token, then it is fatal."""
    for fresh in (False, True):
        token = await tokens.get(fresh=fresh)
        log("connect_attempt", purpose=purpose, fresh_token=fresh)
        try:
            return await connect(
                env.realtime_url(),
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=open_timeout,
                ping_interval=ping_interval or None,
                ping_timeout=ping_timeout or None,
                close_timeout=CLOSE_TIMEOUT,
                ssl=env.tls_context,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            message = error_message(exc.response.body or b"")
            log("handshake_refused", status=status, message=message)
            if status == 401 and not fresh:
                tokens.discard()
                continue
            if status in (401, 403):
                raise Fatal(f"HTTP {status} at the handshake: {message}") from None
            if status == 429:
                retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
                raise Retry("HTTP 429 at the handshake", retry_after=retry_after) from None
            raise Retry(f"HTTP {status} at the handshake") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Retry(f"cannot connect: {exc!r}") from None
    raise AssertionError("unreachable: the second 401 is fatal")


async def session_created(ws: ClientConnection, log: JsonLog, *, timeout: float) -> dict[str, Any]:
    """Wait for session.created; a close before it is fatal for 1008/3000, else worth a retry."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - loop.time()))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            if code in FATAL_CLOSE_CODES:
                raise Fatal(f"closed {code} ({FATAL_CLOSE_CODES[code]}) {reason!r} at once") from None
            raise Retry(f"closed {code} before session.created") from None
        except TimeoutError:
            raise Retry("no session.created in time") from None
        event = json.loads(raw)
        if event.get("type") == "session.created":
            return dict(event.get("session") or {})
        if event.get("type") == "error":
            error = event.get("error") or {}
            log("error", code=error.get("code"), message=error.get("message"), session=None)
