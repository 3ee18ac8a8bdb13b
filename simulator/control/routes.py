"""The `/_rtsim` HTTP API (and the streaming-session keep-alive) on the simulator's own port."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import faults
from ..admission import Refusal
from ..protocol import RealtimeError, loads_strict
from ..schema import Int, List, Obj, Str, check
from ..tokens import key_id
from . import fanout
from .scheduling import ControlPlane

if TYPE_CHECKING:
    from ..carrier import Carrier
    from ..server import RealtimeServer

PREFIX = "/_rtsim"
FAULT_REQUEST = Obj(
    {"kind": Str(), "params": Obj({}, open=True), "target": Obj({}, open=True), "when": Obj({}, open=True)},
    required=("kind",),
)
KEEP_ALIVE_REQUEST = Obj({"session_id": Str()}, required=("session_id",))
SIP_RING_REQUEST = Obj(
    {
        "webhook_url": Str(),
        "sip_headers": List(Obj({"name": Str(), "value": Str()}, required=("name", "value"))),
        "key": Str(),  # the project: only this key (or its tokens) may answer; absent, any valid key
        "key_id": Str(),
        "webhook_secret": Str(),
        "sip_media_security": Str(),
        "deliveries": Int(1, 10),  # >1: the same webhook delivered again (retries, duplicates)
    },
    required=("webhook_url",),
)
DTMF_REQUEST = Obj({"keys": Str()}, required=("keys",))
SAY_REQUEST = Obj({"text": Str(max_length=2000)}, required=("text",))
MAX_CLIENT_RECORDS = 100  # per request
MAX_CLIENT_RECORD_BYTES = 8192  # per record, as JSON
CLIENT_RECORDS_REQUEST = Obj(
    {
        "key": Str(),
        "client": Str(max_length=64),
        "records": List(
            Obj({"event": Str(max_length=64)}, open=True, required=("event",)), max_items=MAX_CLIENT_RECORDS
        ),
    },
    required=("key", "client", "records"),
)

# A client record cannot pass itself off as the server's own bookkeeping.
RESERVED_FIELDS = frozenset({"seq", "t", "wall", "kind", "key_id", "client", "session", "conn"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bad_request(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "param": param}}, status=status
    )


# The only bind addresses the control API trusts without --admin-token: the loopback interface's own
# addresses. Any other (127.0.0.2 included, and names, which may resolve anywhere) needs the token.
TRUSTED_BIND_ADDRESSES = frozenset({"127.0.0.1", "::1"})
SAFE_FETCH_SITES = frozenset({"none", "same-origin"})


def client_page() -> Path:
    """Where the browser reference client's static files are (package data of `rtsim.clients`)."""
    return Path(str(resources.files("rtsim.clients"))) / "browser_page"


def is_loopback(host: str) -> bool:
    return host in TRUSTED_BIND_ADDRESSES


def browser_refusal(request: web.Request) -> web.Response | None:
    """A 403 for a request a web page could have made (cross-site request forgery), as Toxiproxy refuses
    `Mozilla/` user agents; None for a request from a program. POST bodies must be declared JSON, which a
    page cannot do without a CORS preflight that this server never grants."""
    headers = request.headers
    if "Origin" in headers:
        why = "an Origin header"
    elif headers.get("Sec-Fetch-Site", "none").lower() not in SAFE_FETCH_SITES:
        why = f"Sec-Fetch-Site: {headers['Sec-Fetch-Site']}"
    elif headers.get("User-Agent", "").startswith("Mozilla/"):
        why = "a browser User-Agent"
    else:
        if request.method == "POST" and request.content_type != "application/json":
            return bad_request(
                415, f"The control API takes Content-Type: application/json, not '{request.content_type}'."
            )
        return None
    return bad_request(403, f"The control API refuses requests from browsers ({why}).")


async def read_json(request: web.Request, empty: Any) -> Any:
    """The body as strict JSON (`empty` when there is none); ValueError for anything else."""
    raw = await request.read()
    return loads_strict(raw) if raw else empty


def describe(conn: Carrier) -> dict[str, Any]:
    """One live session as `GET /_rtsim/sessions` lists it."""
    session = conn.session
    return {
        "session": session.id,
        "conn": conn.conn_id,
        "key_id": conn.key_id,
        "model": session.config.get("model"),
        "transport": conn.transport,
        "age_s": round(conn.loop.time() - session.started_at, 3),
        "expires_at": session.expires_at,
        "active_response": session.active_response.id if session.active_response else None,
        "stalled": getattr(conn, "stalled", False),
    }


def _parsed(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _json_answer(answer: fanout.Answer) -> web.Response:
    status, body = answer
    if status == 204:
        return web.Response(status=204)
    return web.json_response(body, status=status)


def install(server: RealtimeServer, app: web.Application, *, kinds: Collection[str] | None = None) -> None:
    """Give `server` its control plane and add the API's routes to `app`.

    `kinds` narrows the faults offered (the recording proxy has wire faults only, and no engine to keep
    alive); None offers the whole catalogue and the streaming keep-alive call.
    """
    control = ControlPlane(server)
    server.control = control
    peer_client = fanout.PeerClient()

    async def close_peer_client(app: web.Application) -> None:
        await peer_client.close()

    app.on_cleanup.append(close_peer_client)

    async def ask_everyone(request: web.Request, local: Handler) -> list[tuple[int, int, str]]:
        """(worker, status, text) of this worker's own answer and of every peer's."""
        body = await request.read()
        mine = await local(request)
        text = mine.text if isinstance(mine, web.Response) and mine.body is not None else ""
        forwarded = {
            name: value
            for name, value in request.headers.items()
            if name in ("Content-Type", "X-Rtsim-Admin-Token", "Authorization")
        }
        theirs = await peer_client.ask(server.peers, request.method, request.path_qs, body, forwarded)
        return [(server.config.worker or 0, mine.status, text or ""), *theirs]

    def federated(local: Handler, merge: Callable[[list[fanout.Answer]], fanout.Answer]) -> Handler:
        """`local` on this worker alone, or — asked from outside with peers — on every worker, merged."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if not server.peers or fanout.LOCAL_HEADER in request.headers:
                return await local(request)
            answers = await ask_everyone(request, local)
            return _json_answer(merge([(status, _parsed(text)) for _, status, text in answers]))

        return handler

    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if (refused := browser_refusal(request)) is not None:
                return refused
            if not is_loopback(server.config.host):
                token = server.config.admin_token
                if not token:
                    return bad_request(
                        403,
                        "The control API is off when the simulator is bound beyond loopback "
                        "without --admin-token.",
                    )
                if request.headers.get("X-Rtsim-Admin-Token") != token:
                    return bad_request(401, "Missing or wrong X-Rtsim-Admin-Token.")
            return await handler(request)

        return wrapper

    async def sessions(request: web.Request) -> web.Response:
        listed = [describe(c) for c in server.live_carriers()]
        if server.config.worker is not None:
            listed = [{**entry, "worker": server.config.worker} for entry in listed]
        return web.json_response({"sessions": listed})

    async def catalogue(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "faults": [
                    {"kind": k.name, "scope": k.scope, "params": sorted(k.params.fields), "doc": k.doc}
                    for k in faults.CATALOGUE.values()
                    if kinds is None or k.name in kinds
                ]
            }
        )

    async def post_fault(request: web.Request) -> web.Response:
        try:
            body = await read_json(request, None)
        except ValueError:
            return bad_request(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return bad_request(400, 'The request body must be a JSON object: {"kind": ..., "params": ...}.')
        try:
            body = check(FAULT_REQUEST, body, "")
            if kinds is not None and body["kind"] not in kinds:
                raise RealtimeError(
                    f"Fault kind '{body['kind']}' is not offered here. Offered: {', '.join(kinds)}.",
                    code="invalid_value",
                    param="kind",
                )
            outcome = control.inject(
                body["kind"], body.get("params"), body.get("target"), body.get("when"), route="control-api"
            )
        except RealtimeError as exc:
            status = 404 if exc.code in ("session_not_found", "no_target") else 400
            return bad_request(status, exc.message, exc.param)
        return web.json_response(outcome, status=201 if "scheduled" in outcome else 200)

    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "scheduled": [
                    {"id": s.id, "kind": s.kind, "params": s.params, "target": s.target, "when": s.when}
                    for s in control.scheduled.values()
                ]
            }
        )

    async def delete_fault(request: web.Request) -> web.Response:
        # A fault scheduled on several workers has one id per worker, joined with commas (see fanout).
        cancelled = [control.cancel(part) for part in request.match_info["fault_id"].split(",")]
        if not any(cancelled):
            return bad_request(404, f"No scheduled fault '{request.match_info['fault_id']}'.")
        return web.Response(status=204)

    async def history(request: web.Request) -> web.Response:
        query = request.query
        try:
            since = int(query.get("since", "0"))
            if since < 0:
                raise ValueError(since)
        except ValueError:
            return bad_request(400, "since must be a record seq (an integer >= 0)", "since")
        records = server.history.select(
            kind=query.get("kind"), session=query.get("session"), key_id=query.get("key_id"), since_seq=since
        )
        return web.Response(text=server.history.to_jsonl(records), content_type="application/x-ndjson")

    async def client_records(request: web.Request) -> web.Response:
        """What a client saw (a browser's states and getStats), joined to its key's records as `client`."""
        try:
            body = check(CLIENT_RECORDS_REQUEST, await read_json(request, None), "")
        except ValueError:
            return bad_request(400, "The request body is not valid JSON.")
        except RealtimeError as exc:
            return bad_request(400, exc.message, exc.param)
        for index, record in enumerate(body["records"]):
            if len(json.dumps(record)) > MAX_CLIENT_RECORD_BYTES:
                too_big = f"records[{index}] is over {MAX_CLIENT_RECORD_BYTES} bytes."
                return bad_request(400, too_big, "records")
        identity = key_id(body["key"])
        for record in body["records"]:
            fields = {k: v for k, v in record.items() if k not in RESERVED_FIELDS}
            server.history.record("client", key_id=identity, client=body["client"], **fields)
        return web.json_response({"recorded": len(body["records"])})

    async def summary(request: web.Request) -> web.Response:
        if not server.peers or fanout.LOCAL_HEADER in request.headers:
            return web.json_response(
                {**server.history.summary(), "max_loop_lag_ms": server.loop_lag.max_lag_ms}
            )
        forwarded = {k: v for k, v in request.headers.items() if k == "X-Rtsim-Admin-Token"}
        histories = await peer_client.ask(server.peers, "GET", f"{PREFIX}/history", b"", forwarded)
        lags = await peer_client.ask(server.peers, "GET", f"{PREFIX}/summary", b"", forwarded)
        texts = [(server.config.worker or 0, server.history.to_jsonl())]
        texts += [(worker, text) for worker, status, text in histories if status < 400]
        peer_lags = [(_parsed(text) or {}).get("max_loop_lag_ms") for _, status, text in lags if status < 400]
        return web.json_response(fanout.merge_summary(texts, [server.loop_lag.max_lag_ms, *peer_lags]))

    async def federated_history(request: web.Request) -> web.StreamResponse:
        if not server.peers or fanout.LOCAL_HEADER in request.headers:
            return await history(request)
        answers = await ask_everyone(request, history)
        if all(status >= 400 for _, status, _ in answers):
            _, status, text = answers[0]
            return _json_answer((status, _parsed(text)))
        merged = fanout.merge_history([(worker, text) for worker, status, text in answers if status < 400])
        return web.Response(text=merged, content_type="application/x-ndjson")

    async def keep_alive(request: web.Request) -> web.Response:
        # Authenticated as the real endpoint is: a key (or a token minted from it) of the session's own key.
        try:
            admitted = server.admission.authenticate(request)
        except Refusal as refusal:
            return refusal.response()
        try:
            body = await read_json(request, {})
            session_id = check(KEEP_ALIVE_REQUEST, body, "")["session_id"]
        except (ValueError, RealtimeError) as exc:
            return bad_request(400, getattr(exc, "message", "The request body is not valid JSON."))
        conn = next((c for c in server.live_carriers() if c.session.id == session_id), None)
        if conn is None or conn.key_id != admitted.key_id:  # another key's session is not even named
            return bad_request(404, f"Session '{session_id}' is not open.", "session_id")
        conn.session.keep_alive(conn.loop.time())
        conn.pump()
        server.history.record("keep_alive", session=session_id, key_id=conn.key_id)
        return web.json_response({"session_id": session_id, "status": "ok"})

    async def sip_ring(request: web.Request) -> web.Response:
        try:
            body = check(SIP_RING_REQUEST, await read_json(request, {}), "")
            url = body["webhook_url"]
            if not url.startswith(("http://", "https://")):
                raise RealtimeError("webhook_url must be an http:// or https:// URL.", param="webhook_url")
        except ValueError:
            return bad_request(400, "The request body is not valid JSON.")
        except RealtimeError as exc:
            return bad_request(400, exc.message, exc.param)
        project = key_id(body["key"]) if "key" in body else body.get("key_id")
        incoming = await server.sip.ring(
            url,
            sip_headers=body.get("sip_headers"),
            key_id=project,
            secret=body.get("webhook_secret"),
            media_security=body.get("sip_media_security"),
            deliveries=body.get("deliveries", 1),
        )
        return web.json_response(incoming.describe(), status=201)

    async def sip_calls(request: web.Request) -> web.Response:
        return web.json_response({"calls": [c.describe() for c in server.sip.incoming.values()]})

    async def sip_dtmf(request: web.Request) -> web.Response:
        try:
            keys = check(DTMF_REQUEST, await read_json(request, {}), "")["keys"]
            server.sip.press(request.match_info["call_id"], keys)
        except ValueError:
            return bad_request(400, "The request body is not valid JSON.")
        except RealtimeError as exc:
            return bad_request(404 if exc.code == "session_not_found" else 400, exc.message, exc.param)
        return web.json_response({"call_id": request.match_info["call_id"], "keys": keys})

    async def sip_say(request: web.Request) -> web.Response:
        try:
            text = check(SAY_REQUEST, await read_json(request, {}), "")["text"]
            queued = server.sip.say(request.match_info["call_id"], text)
        except ValueError:
            return bad_request(400, "The request body is not valid JSON.")
        except RealtimeError as exc:
            return bad_request(404 if exc.code == "session_not_found" else 400, exc.message, exc.param)
        return web.json_response({"call_id": request.match_info["call_id"], "queued_s": round(queued, 3)})

    async def sip_caller_hangup(request: web.Request) -> web.Response:
        try:
            await server.sip.caller_hangs_up(request.match_info["call_id"])
        except RealtimeError as exc:
            return bad_request(404, exc.message, exc.param)
        return web.Response(status=204)

    app.router.add_get(f"{PREFIX}/sessions", guarded(federated(sessions, fanout.merge_sessions)))
    app.router.add_get(f"{PREFIX}/catalogue", guarded(catalogue))
    app.router.add_post(f"{PREFIX}/faults", guarded(federated(post_fault, fanout.merge_fault)))
    app.router.add_get(f"{PREFIX}/faults", guarded(federated(list_faults, fanout.merge_scheduled)))
    app.router.add_delete(
        f"{PREFIX}/faults/{{fault_id}}", guarded(federated(delete_fault, fanout.merge_first_success))
    )
    app.router.add_get(f"{PREFIX}/history", guarded(federated_history))
    app.router.add_get(f"{PREFIX}/summary", guarded(summary))
    app.router.add_post(f"{PREFIX}/client-records", guarded(client_records))
    if kinds is None:
        app.router.add_post("/v1/streaming.keep_alive", keep_alive)
        app.router.add_post(f"{PREFIX}/sip/calls", guarded(sip_ring))
        app.router.add_get(f"{PREFIX}/sip/calls", guarded(sip_calls))
        app.router.add_post(f"{PREFIX}/sip/calls/{{call_id}}/dtmf", guarded(sip_dtmf))
        app.router.add_post(f"{PREFIX}/sip/calls/{{call_id}}/say", guarded(sip_say))
        app.router.add_post(f"{PREFIX}/sip/calls/{{call_id}}/hangup", guarded(sip_caller_hangup))
        # The browser reference client's page, for a person to open (with ?backend= naming the app backend
        # that mints its tokens, e.g. `python -m rtsim.clients.browser`'s). Static files, not the control
        # API: a browser must load them, so they are not guarded (and no CORS is granted on them either).
        page = client_page()
        if page.is_dir():
            app.router.add_static(f"{PREFIX}/client/", page)
