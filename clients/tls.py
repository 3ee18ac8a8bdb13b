"""Trusting the simulator over TLS (`rtsim serve --tls`, `rtsim run --tls`): one verifying context a process.

The CA comes the way every Python stack already takes it, OpenSSL's `SSL_CERT_FILE` (what `rtsim serve --tls`
prints and `rtsim run --tls` hands its clients); without it, the system store. Verification is never off.
The context is built once and passed explicitly to websockets, aiohttp and the SDK, so no client depends on
a library reading the variable itself.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp


def is_tls(url: str) -> bool:
    return url.startswith(("https://", "wss://"))


@functools.cache
def _context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def context_for(url: str, env: Mapping[str, str] = os.environ) -> ssl.SSLContext | None:
    """The verifying context for an https/wss URL (None for http/ws: websockets refuses one for ws://)."""
    if not is_tls(url):
        return None
    return _context(env.get("SSL_CERT_FILE") or None)


def http_session(url: str, env: Mapping[str, str] = os.environ, **options: Any) -> aiohttp.ClientSession:
    """An aiohttp session for the simulator at `url`, trusting its CA when it speaks TLS."""
    context = context_for(url, env)
    connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
    return aiohttp.ClientSession(connector=connector, **options)
