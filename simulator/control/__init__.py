"""The control plane: an HTTP API under `/_rtsim` on the simulator's own port, and the commands that use it.

    GET    /_rtsim/sessions               live sessions
    GET    /_rtsim/catalogue              fault kinds, their scope and documentation
    POST   /_rtsim/faults                 {kind, params?, target?, when?} → applied or scheduled
    GET    /_rtsim/faults                 scheduled faults not yet fired
    DELETE /_rtsim/faults/{id}            cancel a scheduled fault
    GET    /_rtsim/history                ?session=&key_id=&kind=&since= (JSON Lines)
    GET    /_rtsim/summary                per client identity: its connections and the gaps between them
    POST   /v1/streaming.keep_alive       {session_id}: the streaming keep-alive, with the session's key
    POST   /_rtsim/sip/calls              {webhook_url, sip_headers?, key?, webhook_secret?}: a SIP call rings
                                          and its signed `realtime.call.incoming` webhook is delivered
    GET    /_rtsim/sip/calls              every SIP call and its state (ringing, accepted, rejected, ...)
    POST   /_rtsim/sip/calls/{id}/dtmf    {keys}: the caller presses keypad keys (dtmf_event_received)
    POST   /_rtsim/sip/calls/{id}/say     {text}: the caller speaks (down the line, to the server VAD)
    POST   /_rtsim/sip/calls/{id}/hangup  the caller hangs up

`target` is `{"session": ID}`, `{"key": API_KEY}` / `{"key_id": ID}` (every live session of that key), or
`{}` (every live session). `when` is `{"after_ms": N}` or `{"at_event": {"type": T, "nth": N}}` (right after
the Nth server event of type T on each targeted session). Bound to 127.0.0.1 or ::1 the API is open to
local programs; bound elsewhere it needs `X-Rtsim-Admin-Token` (`--admin-token`), and without one
configured it is off. Browser requests (an `Origin`, a cross-site `Sec-Fetch-Site`, a `Mozilla/` agent) get
403 and POST bodies must be `application/json`, so no web page can drive it.

Three modules along its seams: `routes` (the HTTP API), `scheduling` (`ControlPlane`: inject now or later,
cancel, fault plans) and `commands` (`rtsim fault` / `sessions` / `history`).
"""

from __future__ import annotations

from .commands import call, control_root, register
from .routes import PREFIX, install
from .scheduling import ControlPlane, Scheduled

__all__ = ["PREFIX", "ControlPlane", "Scheduled", "call", "control_root", "install", "register"]
