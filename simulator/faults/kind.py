"""What every fault is made of: its kind (name, scope, parameter schema, effect) and what it acts on.

A fault's effect has one signature for session and server faults alike, `apply(target, params) -> str`
(the str says what was done, for the history and the CLI). A session fault acts on `target.carrier`, one
live session's carrier, through the carrier's public interface only; a server fault acts on
`target.server` — the small server-side interface below — for `target.key_id` (None: every key).
Nothing here imports the server or a carrier at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..schema import Obj
from .state import FaultState

if TYPE_CHECKING:
    from ..carrier import Carrier
    from ..webrtc.call import Call

Scope = Literal["session", "server"]
# The longest delay or duration a fault takes, in seconds: longer than any session lives, and small enough
# that every timer and Retry-After derived from it stays an ordinary number.
MAX_FAULT_SECONDS = 86_400.0
MAX_REASON_BYTES = 123  # a close frame's reason: 125 bytes of payload less the 2-byte code
CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000)
ANY_TRANSPORT = ("websocket", "webrtc", "sip")
WEBSOCKET = ("websocket",)
WEBRTC = ("webrtc",)
SIP = ("sip",)


class Tokens(Protocol):
    """The token authority, as faults use it."""

    def revoke_token(self, token_id: str) -> None: ...

    def revoke_key(self, key_id_: str, now: float | None = None) -> None: ...


@dataclass(frozen=True)
class ServerSide:
    """The server as faults see it: what server faults leave behind, the tokens, the live carriers of a
    key, and the hooks run on each new WebRTC call before its answer is made."""

    state: FaultState
    tokens: Tokens
    live_carriers: Callable[[str | None], list[Carrier]]
    # A function, because reaching the WebRTC side loads it; it raises RealtimeError where there is none.
    call_hooks: Callable[[], list[Callable[[Call], None]]]

    def on_next_calls(self, key_id: str | None, count: int, setup: Callable[[Call], None]) -> None:
        """Apply `setup` to the next `count` WebRTC calls (of `key_id`, or any) before they are answered."""
        hooks = self.call_hooks()
        remaining = [count]

        def hook(call: Call) -> None:
            if key_id is not None and call.key_id != key_id:
                return
            setup(call)
            remaining[0] -= 1
            if remaining[0] <= 0:
                hooks.remove(hook)

        hooks.append(hook)


@dataclass(frozen=True)
class Target:
    """What one application of a fault acts on: a session's carrier (session faults), or the server side
    and, when the request named one, a key (server faults)."""

    server: ServerSide
    key_id: str | None = None
    on: Carrier | None = None

    @property
    def carrier(self) -> Carrier:
        if self.on is None:
            raise TypeError("a server fault has no carrier; use target.server")
        return self.on


@dataclass(frozen=True)
class FaultKind:
    name: str
    scope: Scope
    params: Obj
    apply: Callable[[Target, dict[str, Any]], str]
    doc: str
    # Which session carriers a session fault can act on: the engine's faults work over any transport; wire
    # faults need a WebSocket, ICE/DTLS/SCTP faults a WebRTC call.
    transports: tuple[str, ...] = ANY_TRANSPORT
