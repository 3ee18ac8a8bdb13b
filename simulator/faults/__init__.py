"""The fault catalogue: each production failure as a small unit — its parameters, its scope, its effect.

A fault is either *session-scoped* (applied to each targeted live session: drop, close, stall, ...) or
*server-scoped* (changes how the server treats what comes next: reject-connects, expire-tokens,
rate-limit). `inject()` is the one way in, used by the control API, the CLI (through the control API) and
fault plans; every injection enters the history with its time, target and route.

The catalogue is assembled from this package's modules: every module with a `FAULTS` tuple of `FaultKind`s
contributes them, so a new fault is one new module (and its test) and touches no other file. The kinds'
effects act through `kind.Target` only (a carrier's public interface, or `kind.ServerSide`); `timing`
is the one model of when a fault happens.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from ..protocol import RealtimeError
from ..schema import Bool, Obj, Str, check
from ..tokens import key_id as key_id_of
from .kind import CLOSE_CODES, MAX_REASON_BYTES, FaultKind, Scope, ServerSide, Target
from .state import DEFAULT_RETRY_AFTER, FaultState, Rejection, retry_after_header
from .timing import EVENT_TYPES, check_event_type

if TYPE_CHECKING:
    from ..carrier import Carrier
    from ..server import RealtimeServer

__all__ = [
    "CATALOGUE",
    "CLOSE_CODES",
    "DEFAULT_RETRY_AFTER",
    "EVENT_TYPES",
    "MAX_REASON_BYTES",
    "TARGET",
    "FaultKind",
    "FaultState",
    "Rejection",
    "Scope",
    "ServerSide",
    "Target",
    "check_event_type",
    "discover",
    "inject",
    "public_target",
    "retry_after_header",
    "validate",
]

TARGET = Obj({"session": Str(), "key_id": Str(), "key": Str(), "all": Bool()})


def public_target(target: dict[str, Any]) -> dict[str, Any]:
    """A target as records and listings show it: a raw API key becomes its key id."""
    if "key" not in target:
        return target
    shown = {k: v for k, v in target.items() if k != "key"}
    shown.setdefault("key_id", key_id_of(target["key"]))
    return shown


def discover() -> dict[str, FaultKind]:
    """Every `FaultKind` in the `FAULTS` of this package's modules: session faults, then server faults, each
    in module-name order (and each module's own order)."""
    kinds: list[FaultKind] = []
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        kinds.extend(getattr(module, "FAULTS", ()))
    catalogue: dict[str, FaultKind] = {}
    for kind in sorted(kinds, key=lambda k: k.scope != "session"):  # stable: module order kept
        if kind.name in catalogue:
            raise RuntimeError(f"two fault kinds are named {kind.name!r}")
        catalogue[kind.name] = kind
    return catalogue


CATALOGUE: dict[str, FaultKind] = discover()


def validate(kind: str, params: Any) -> tuple[FaultKind, dict[str, Any]]:
    if kind not in CATALOGUE:
        raise RealtimeError(
            f"Unknown fault kind '{kind}'. Known kinds: {', '.join(CATALOGUE)}.",
            code="invalid_value",
            param="kind",
        )
    spec = CATALOGUE[kind]
    checked = check(spec.params, params if params is not None else {}, "params")
    reason = checked.get("reason")
    if reason is not None and len(reason.encode()) > MAX_REASON_BYTES:
        raise RealtimeError(
            f"Invalid 'params.reason': a close reason is at most {MAX_REASON_BYTES} bytes of UTF-8, "
            f"got {len(reason.encode())}.",
            code="string_above_max_length",
            param="params.reason",
        )
    return spec, checked


def server_side(server: RealtimeServer) -> ServerSide:
    """The small interface faults have of the server."""
    return ServerSide(
        state=server.faults,
        tokens=server.tokens,
        live_carriers=lambda key_id: server.live_carriers(key_id),
        call_hooks=lambda: server.webrtc.on_new_call,
    )


def inject(
    server: RealtimeServer,
    kind: str,
    params: dict[str, Any] | None,
    target: dict[str, Any] | None,
    *,
    route: str,
    connections: list[Carrier] | None = None,
) -> dict[str, Any]:
    """Validate, resolve the target, apply, and record. Returns what was done (for the API and the CLI).

    A session fault is recorded once per session it hit (with that `session` and its `key_id`), so the
    history of one session or one key shows the faults it met; a server fault is recorded once.
    """
    spec, checked = validate(kind, params)
    target = check(TARGET, target or {}, "target")
    key_id = server.target_key_id(target)
    side = server_side(server)
    record = {"fault": kind, "params": checked, "target": public_target(target), "route": route}
    if spec.scope == "server":
        result = spec.apply(Target(side, key_id), checked)
        server.history.record("fault", **record, key_id=key_id, applied_to=[], result=result)
        return {"kind": kind, "scope": "server", "applied_to": [], "result": result}
    if connections is None:
        connections = server.resolve_targets(target)
    connections = [c for c in connections if c.transport in spec.transports]
    if not connections:
        over = "" if len(spec.transports) > 1 else f" {spec.transports[0]}"
        raise RealtimeError(f"No live{over} session matches the target.", code="no_target", param="target")
    results = {}
    for carrier in connections:
        sid = carrier.session.id
        results[sid] = spec.apply(Target(side, carrier.key_id, carrier), checked)
        server.history.record(
            "fault", **record, session=sid, key_id=carrier.key_id, applied_to=[sid], result=results[sid]
        )
    return {
        "kind": kind,
        "scope": "session",
        "applied_to": list(results),
        "result": next(iter(results.values())),
    }
