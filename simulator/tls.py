"""HTTPS and WSS: one TLS context for the whole origin (REST, WebSocket, WebRTC calls, control API).

Some clients only speak TLS: the official Node SDK builds `wss:` URLs whatever the base URL says, and a
browser page on `https:` may not call `http:`. So `rtsim serve --tls` serves its one port over TLS with

- a local CA and a server certificate for 127.0.0.1, localhost and ::1 made at start by `trustme` (keys and
  X.509 from `cryptography`; never hand-written ASN.1), the CA certificate written where clients can trust it;
- or the user's own certificate and key (`--tls-cert/--tls-key`), with the CA that issued it if they name one.

Clients trust the CA the ordinary way of their stack; `ServerTLS.trust_lines()` says how.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The names a local client reaches the simulator by; a certificate for them covers every loopback base URL.
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
CA_FILE_NAME = "rtsim-ca.pem"


class TLSConfigError(ValueError):
    """The TLS options do not make a usable server certificate (missing or mismatched files)."""


@dataclass(frozen=True)
class ServerTLS:
    """The server side of TLS: the context the site serves with, and the CA file clients should trust.

    `ca_file` is None when the user serves their own certificate without naming its CA: clients then trust
    it however they already do.
    """

    context: ssl.SSLContext
    ca_file: str | None
    generated: bool  # made at start from a local CA (not a certificate the user brought)
    temporary_dir: str | None = None  # the directory made for the CA file, removed when the server stops

    def remove_temporary(self) -> None:
        if self.temporary_dir is not None:
            shutil.rmtree(self.temporary_dir, ignore_errors=True)

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server (the CA file, else the system's store)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def client_env(self) -> dict[str, str]:
        """The variables that make a client process trust the CA: Python (ssl, httpx, aiohttp, websockets
        all read OpenSSL's SSL_CERT_FILE) and Node (NODE_EXTRA_CA_CERTS adds to its bundled roots)."""
        if self.ca_file is None:
            return {}
        return {"SSL_CERT_FILE": self.ca_file, "NODE_EXTRA_CA_CERTS": self.ca_file}

    def trust_lines(self) -> list[str]:
        return trust_lines(self.ca_file)


def trust_lines(ca_file: str | None) -> list[str]:
    """What `rtsim serve --tls` prints so a person can point each kind of client at the CA."""
    if ca_file is None:
        return ["TLS: serving the given certificate; clients trust it through their usual store"]
    return [
        f"TLS CA certificate: {ca_file}",
        f"  Node:    export NODE_EXTRA_CA_CERTS={ca_file}",
        f"  Python:  export SSL_CERT_FILE={ca_file}",
        f"  Python:  ssl.create_default_context(cafile={ca_file!r})",
        f"  curl:    curl --cacert {ca_file} ...",
    ]


def default_ca_path() -> str:
    """A CA file path in a new private temporary directory (the default of `--tls-ca-file`)."""
    return str(Path(tempfile.mkdtemp(prefix="rtsim-tls-")) / CA_FILE_NAME)


def local_ca(ca_file: str | os.PathLike[str] | None = None) -> ServerTLS:
    """A fresh CA and a server certificate for the loopback names; the CA certificate goes to `ca_file`
    (by default a file in a new temporary directory). CPU work (key generation): run it off the event loop."""
    import trustme  # imported here: only a TLS server pays for it

    authority = trustme.CA(organization_name="rtsim local CA")
    certificate = authority.issue_cert(*LOCAL_NAMES, organization_name="rtsim")
    context = _server_context()
    certificate.configure_cert(context)
    path = Path(ca_file if ca_file is not None else default_ca_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    authority.cert_pem.write_to_path(str(path))
    temporary = str(path.parent) if ca_file is None else None
    return ServerTLS(context, str(path.resolve()), generated=True, temporary_dir=temporary)


def local_ca_files(ca_file: str | os.PathLike[str]) -> str:
    """A fresh local CA written to `ca_file`, and its server certificate with its key written beside it
    (mode 0600); returns that file's path. For several processes that must serve the same certificate
    (`rtsim serve --workers N`): each loads it with `own_certificate`."""
    import trustme

    authority = trustme.CA(organization_name="rtsim local CA")
    certificate = authority.issue_cert(*LOCAL_NAMES, organization_name="rtsim")
    path = Path(ca_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    authority.cert_pem.write_to_path(str(path))
    server_pem = path.with_name("rtsim-server.pem")
    server_pem.touch(mode=0o600)
    certificate.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    return str(server_pem.resolve())


def own_certificate(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str] | None,
    ca_file: str | os.PathLike[str] | None = None,
) -> ServerTLS:
    """Serve a certificate the user brings (PEM; the key may be in the certificate file)."""
    for path in (cert_file, key_file, ca_file):
        if path is not None and not Path(path).is_file():
            raise TLSConfigError(f"cannot read {path}: no such file")
    context = _server_context()
    try:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    except ssl.SSLError as exc:
        message = f"{cert_file} and {key_file} are no usable PEM certificate and key: {exc}"
        raise TLSConfigError(message) from None
    return ServerTLS(context, str(Path(ca_file).resolve()) if ca_file is not None else None, generated=False)


def server_tls(
    *, cert_file: str | None = None, key_file: str | None = None, ca_file: str | None = None
) -> ServerTLS:
    """The server's TLS from its options: the user's own certificate if given, else a local CA."""
    if cert_file is not None:
        return own_certificate(cert_file, key_file, ca_file)
    if key_file is not None:
        raise TLSConfigError("--tls-key needs --tls-cert")
    return local_ca(ca_file)


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # HTTP/1.1 only: the WebSocket upgrade (RFC 6455) needs it, and aiohttp serves nothing else.
    context.set_alpn_protocols(["http/1.1"])
    return context


# ---- figures: `python -m rtsim.simulator.tls` -------------------------------------------------------------


async def _connect_times(use_tls: bool, count: int) -> list[float]:
    """Milliseconds from opening a connection to `session.created`, `count` times in a row."""
    import time

    from websockets.asyncio.client import connect

    from .api import Simulator

    async with Simulator(tls=use_tls) as sim:
        url = sim.base_url.replace("https://", "wss://").replace("http://", "ws://") + "/realtime?model=x"
        times = []
        for _ in range(count):
            started = time.perf_counter()
            headers = {"Authorization": f"Bearer {sim.api_key}"}
            async with connect(url, ssl=sim.ssl_context, additional_headers=headers) as ws:
                await ws.recv()
            times.append((time.perf_counter() - started) * 1000)
        return times


def bench(count: int = 50) -> None:
    """What TLS costs: the CA made at start, and a session's handshake over ws:// and wss://."""
    import asyncio
    import statistics
    import time

    started = time.perf_counter()
    local_ca()
    print(f"local CA + server certificate (trustme): {(time.perf_counter() - started) * 1000:.0f} ms")
    for use_tls in (False, True):
        times = sorted(asyncio.run(_connect_times(use_tls, count)))
        scheme = "wss" if use_tls else "ws"
        print(
            f"{scheme:>3}: connect → session.created median {statistics.median(times):.1f} ms, "
            f"p90 {times[int(len(times) * 0.9)]:.1f} ms (n={count})"
        )


if __name__ == "__main__":
    bench()
