"""CORS on the REST endpoints a browser page calls directly, as the real API answers them.

A browser app posts its SDP offer to `/v1/realtime/calls` from its own origin with `Authorization: Bearer
<ephemeral token>` and `Content-Type: application/sdp`: neither is CORS-safelisted, so the browser first sends
a preflight `OPTIONS` and only posts if the answer allows the origin, the method and each header. The real
service answers with `Access-Control-Allow-Origin: *` and a fixed header list — public evidence:
Niek/chatgpt-web#330 (2026-08: api.openai.com "accepts the browser preflight for Authorization and
Content-Type and returns Access-Control-Allow-Origin: *") and openclaw/openclaw#76435 (2026-05: a browser's
`originator` header "is not allowed by Access-Control-Allow-Headers in preflight response" from
api.openai.com — the list is fixed, request headers are not reflected). The official SDKs run in a browser
(`dangerouslyAllowBrowser`) and send `OpenAI-Beta`, `OpenAI-Organization`, `OpenAI-Project` and their
`X-Stainless-*` telemetry, so those are on the list too; `@openai/agents-realtime`'s WebRTC transport posts
its offer from the browser with `X-OpenAI-Agents-SDK` (openaiRealtimeWebRtc.mjs, 0.20.0) and reads the
answer's `Location` for the call id, so that header is allowed and `Location` exposed.

`Location` (the call id of a new call) is exposed, or a page could not name its call to hang it up.

Never on the control API (`/_rtsim/`): that refuses browser-originated requests (simulator/control/routes.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

ANY_ORIGIN = "*"
DEFAULT_ORIGINS: tuple[str, ...] = (ANY_ORIGIN,)  # the real service allows every origin
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-client-request-id",
    "x-openai-agents-sdk",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
EXPOSED_HEADERS = "Location, x-request-id, openai-processing-ms"
# The REST routes a page calls directly (the browser flow: mint a secret, post the offer, hang up).
CORS_PATHS = frozenset(
    {
        "/v1/realtime/calls",
        "/v1/realtime/calls/{call_id}/hangup",
        "/v1/realtime/client_secrets",
        "/v1/realtime/sessions",
    }
)


class Cors:
    """The CORS policy of one server: which origins may call the browser-facing REST endpoints."""

    def __init__(self, origins: Sequence[str] = DEFAULT_ORIGINS) -> None:
        self.origins = tuple(o.rstrip("/") for o in origins)
        self.any_origin = ANY_ORIGIN in self.origins

    def install(self, app: web.Application) -> None:
        """Preflight routes for the CORS paths, and the allow-origin header on their every response."""
        for path in sorted(CORS_PATHS):
            app.router.add_route("OPTIONS", path, self.preflight)
        app.on_response_prepare.append(self._on_prepare)

    def allow_origin(self, origin: str | None) -> str | None:
        """The `Access-Control-Allow-Origin` value for a request from `origin`, or None: not allowed."""
        if origin is None:
            return None
        if self.any_origin:
            return ANY_ORIGIN
        return origin if origin in self.origins else None

    async def preflight(self, request: web.Request) -> web.Response:
        allowed = self.allow_origin(request.headers.get("Origin"))
        method = request.headers.get("Access-Control-Request-Method", "")
        if allowed is None or not method:
            # Not a preflight from an allowed origin: an empty answer without allow headers, so the browser
            # refuses the real request (what a server that does not allow the origin looks like).
            return web.Response(status=204, headers={"Vary": "Origin"} if not self.any_origin else {})
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
        }
        if not self.any_origin:
            headers["Vary"] = "Origin"
        return web.Response(status=200, headers=headers)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.method == "OPTIONS" or not _is_cors_route(request):
            return
        allowed = self.allow_origin(request.headers.get("Origin"))
        if allowed is None:
            return
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if not self.any_origin:
            response.headers.add("Vary", "Origin")


def _is_cors_route(request: web.Request) -> bool:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource is not None and resource.canonical in CORS_PATHS
