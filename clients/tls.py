"""Trusting the simulator over TLS (`rtsim serve --tls`, `rtsim run --tls`): one verifying context a process.

The CA comes the way every Python stack already takes it, OpenSSL's `SSL_CERT_FILE` (what `rtsim serve --tls`
prints and `rtsim run --tls` hands its clients); without it, the system store. Verification is never off.
The context is built once and passed explicitly to websockets, aiohttp and the SDK, so no client depends on
a library reading the variable itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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


async def verified_spki_pin(url: str, env: Mapping[str, str] = os.environ) -> str | None:
    """The base64 SHA-256 of the server's public key, for Chromium's `--ignore-certificate-errors-spki-list`
    (Chromium keeps its own trust store and takes no CA file); None for http. The certificate is verified
    against SSL_CERT_FILE first, so only a server that CA vouches for is pinned."""
    context = context_for(url, env)
    if context is None:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    parts = urlsplit(url)
    _, writer = await asyncio.open_connection(
        parts.hostname, parts.port or 443, ssl=context, server_hostname=parts.hostname
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    public_key = x509.load_der_x509_certificate(der).public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()
