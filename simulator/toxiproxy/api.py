"""The Toxiproxy HTTP API (routes, methods, bodies, statuses and messages of the real server) on aiohttp."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from .errors import ApiError
from .gojson import decode_body, dumps, read_bool, read_float32, read_string, value_type_error
from .server import PopulateFailed, ToxiproxyServer

Handler = Callable[..., Awaitable[web.Response]]

_JSON = "application/json"
_SERVER_KEY = web.AppKey("toxiproxy_server", ToxiproxyServer)


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, headers={"Content-Type": _JSON})


def text_response(text: str, status: int) -> web.Response:
    # What Go's http.Error writes: the text plus a newline, as text/plain.
    return web.Response(
        body=text.encode() + b"\n",
        status=status,
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


def error_response(error: ApiError) -> web.Response:
    return text_response(dumps(error.to_json()).decode(), error.status)


def no_content() -> web.Response:
    return web.Response(status=204)


async def _body_object(request: web.Request, go_type: str) -> Mapping[str, Any]:
    """The request body as a JSON object (`null` counts as empty), or Go's decoding error."""
    value = decode_body(await request.read())
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise value_type_error(value, go_type)
    return value


# handlers
async def reset_state(server: ToxiproxyServer, request: web.Request) -> web.Response:
    await server.reset()
    return no_content()


async def proxy_index(server: ToxiproxyServer, request: web.Request) -> web.Response:
    return json_response({name: proxy.to_json() for name, proxy in server.proxies().items()})


async def proxy_create(server: ToxiproxyServer, request: web.Request) -> web.Response:
    body = await _body_object(request, "toxiproxy.Proxy")
    proxy = await server.create_proxy(
        read_string(body, "name", "Proxy", ""),
        read_string(body, "upstream", "Proxy", ""),
        listen=read_string(body, "listen", "Proxy", ""),
        enabled=read_bool(body, "enabled", "Proxy", True),
    )
    return json_response(proxy.to_json(), status=201)


async def populate(server: ToxiproxyServer, request: web.Request) -> web.Response:
    try:
        value = decode_body(await request.read())
        items = [] if value is None else value
        if not isinstance(items, list):
            raise value_type_error(items, "[]toxiproxy.Proxy")
        configs = []
        for item in items:
            if item is not None and not isinstance(item, dict):
                raise value_type_error(item, "toxiproxy.Proxy")
            item = item or {}
            config: dict[str, Any] = {
                "name": read_string(item, "name", "Proxy", ""),
                "listen": read_string(item, "listen", "Proxy", ""),
                "upstream": read_string(item, "upstream", "Proxy", ""),
            }
            if item.get("enabled") is not None:
                config["enabled"] = read_bool(item, "enabled", "Proxy", True)
            configs.append(config)
        proxies = await server.populate(configs)
    except PopulateFailed as failure:
        return _populate_response(failure, [proxy.to_json() for proxy in failure.populated])
    except ApiError as error:
        return _populate_response(error, [])
    return _populate_response(None, [proxy.to_json() for proxy in proxies])


def _populate_response(error: ApiError | None, proxies: list[dict[str, object]]) -> web.Response:
    # Go marshals an empty result slice as null, and puts the error fields first when there is one.
    body: dict[str, object] = dict(error.to_json()) if error is not None else {}
    body["proxies"] = proxies or None
    return json_response(body, status=error.status if error is not None else 201)


async def proxy_show(server: ToxiproxyServer, request: web.Request, proxy: str) -> web.Response:
    return json_response(server.get_proxy(proxy).to_json())


async def proxy_update(server: ToxiproxyServer, request: web.Request, proxy: str) -> web.Response:
    server.get_proxy(proxy)
    body = await _body_object(request, "toxiproxy.Proxy")
    updated = await server.update_proxy(
        proxy,
        listen=read_string(body, "listen", "Proxy", "") or None,
        upstream=read_string(body, "upstream", "Proxy", "") or None,
        enabled=read_bool(body, "enabled", "Proxy", True) if body.get("enabled") is not None else None,
    )
    return json_response(updated.to_json())


async def proxy_delete(server: ToxiproxyServer, request: web.Request, proxy: str) -> web.Response:
    await server.delete_proxy(proxy)
    return no_content()


async def toxic_index(server: ToxiproxyServer, request: web.Request, proxy: str) -> web.Response:
    return json_response([spec.to_json() for spec in server.toxics(proxy)])


async def toxic_create(server: ToxiproxyServer, request: web.Request, proxy: str) -> web.Response:
    server.get_proxy(proxy)
    body = await _body_object(request, "toxics.ToxicWrapper")
    spec = await server.add_toxic(
        proxy,
        read_string(body, "type", "ToxicWrapper", ""),
        name=read_string(body, "name", "ToxicWrapper", "") or None,
        stream=read_string(body, "stream", "ToxicWrapper", "downstream"),
        toxicity=read_float32(body, "toxicity", "ToxicWrapper", 1.0),
        attributes=body.get("attributes"),
    )
    return json_response(spec.to_json())


async def toxic_show(server: ToxiproxyServer, request: web.Request, proxy: str, toxic: str) -> web.Response:
    return json_response(server.get_toxic(proxy, toxic).to_json())


async def toxic_update(server: ToxiproxyServer, request: web.Request, proxy: str, toxic: str) -> web.Response:
    server.get_toxic(proxy, toxic)
    body = await _body_object(request, "struct { Attributes interface {}; Toxicity float32 }")
    toxicity = body.get("toxicity")
    spec = await server.update_toxic(
        proxy,
        toxic,
        attributes=body.get("attributes"),
        toxicity=read_float32(body, "toxicity", "", 0.0) if toxicity is not None else None,
    )
    return json_response(spec.to_json())


async def toxic_delete(server: ToxiproxyServer, request: web.Request, proxy: str, toxic: str) -> web.Response:
    await server.remove_toxic(proxy, toxic)
    return no_content()


async def version(server: ToxiproxyServer, request: web.Request) -> web.Response:
    # The real server writes this one by hand: a space after the colon and a trailing newline.
    return web.Response(
        body=f'{{"version": "{server.version}"}}\n'.encode(),
        headers={"Content-Type": "application/json;charset=utf-8"},
    )


_NAME = r"(?P<{}>[^/]+)"
ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"/reset"), {"POST": reset_state}),
    (re.compile(r"/proxies"), {"GET": proxy_index, "POST": proxy_create}),
    (re.compile(r"/populate"), {"POST": populate}),
    (
        re.compile(r"/proxies/" + _NAME.format("proxy")),
        {"GET": proxy_show, "POST": proxy_update, "PATCH": proxy_update, "DELETE": proxy_delete},
    ),
    (
        re.compile(r"/proxies/" + _NAME.format("proxy") + "/toxics"),
        {"GET": toxic_index, "POST": toxic_create},
    ),
    (
        re.compile(r"/proxies/" + _NAME.format("proxy") + "/toxics/" + _NAME.format("toxic")),
        {"GET": toxic_show, "POST": toxic_update, "PATCH": toxic_update, "DELETE": toxic_delete},
    ),
    (re.compile(r"/version"), {"GET": version}),
]


async def dispatch(request: web.Request) -> web.Response:
    """Route like gorilla/mux in the real server: unknown path 404, known path with another method 405,
    then (for matched routes only) browsers refused with 403."""
    server = request.app[_SERVER_KEY]
    for pattern, route_methods in ROUTES:
        match = pattern.fullmatch(request.path)
        if match is not None:
            methods = route_methods
            break
    else:
        return text_response("404 page not found", 404)
    handler = methods.get(request.method)
    if handler is None:
        return web.Response(status=405)
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        return text_response("User agent not allowed", 403)
    try:
        return await handler(server, request, **match.groupdict())
    except ApiError as error:
        return error_response(error)


def build_app(server: ToxiproxyServer) -> web.Application:
    app = web.Application()
    app[_SERVER_KEY] = server
    app.router.add_route("*", "/{path:.*}", dispatch)
    return app
