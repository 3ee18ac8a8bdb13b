"""`rtsim serve`: the fake Realtime server as a process."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from . import cors, plan, tls
from .engine.state import EXPIRY_ENDINGS, FASTER_THAN_REAL_TIME, TRANSCRIPTION_DELAY
from .protocol import RealtimeError
from .server import DEFAULT_WEBHOOK_SECRET, PROFILES, ServerConfig, serve_forever


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that starts a simulator (serve, and later run)."""
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="openai",
        help="openai (GA names, 60 min cap), openai-beta (beta names), azure (30 min cap)",
    )
    parser.add_argument(
        "--max-session",
        type=float,
        metavar="SECONDS",
        help="session cap (default: the profile's; scale it down to compress time)",
    )
    parser.add_argument(
        "--token-ttl",
        type=float,
        metavar="SECONDS",
        help="default ephemeral-token lifetime (default 600 s GA, 60 s beta)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted API key (repeatable); with none, any key starting sk- is accepted",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed for ids, audio and the model (default 0; given, session ids are reproducible from it "
        "alone, otherwise they also depend on a secret of this process)",
    )
    parser.add_argument(
        "--response-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay between response.created and the first output",
    )
    parser.add_argument(
        "--mcp-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long a scripted remote MCP server takes to list its tools or to run a call",
    )
    parser.add_argument("--record", metavar="DIR", help="write the history as JSON Lines into DIR")
    parser.add_argument(
        "--expiry-ending",
        choices=EXPIRY_ENDINGS,
        help="how the session cap ends a session: session_expired error event, close 1001, both, or "
        "server_error (a server_error event, then close 1011: Azure's way); default: the profile's "
        "(azure: server_error, otherwise both)",
    )
    parser.add_argument(
        "--models",
        default="known",
        metavar="known|any|NAME,NAME",
        help="model names a session may ask for: known (default: today's real Realtime models; any other "
        "is refused with invalid_model and close 4000), any, or a comma-separated list",
    )
    parser.add_argument("--context-window", type=int, default=32768, metavar="TOKENS")
    parser.add_argument(
        "--pacing",
        type=float,
        default=FASTER_THAN_REAL_TIME,
        help=f"seconds of delivery per second of audio: 1 = real time, 0 = as fast as possible (default "
        f"{FASTER_THAN_REAL_TIME:g}: faster than real time, as the real service sends it)",
    )
    parser.add_argument(
        "--transcription-delay",
        type=_seconds_range,
        default=TRANSCRIPTION_DELAY,
        metavar="LOW,HIGH",
        help="seconds from a commit to its input transcription, drawn (seeded) between the two "
        f"(default {TRANSCRIPTION_DELAY[0]:g},{TRANSCRIPTION_DELAY[1]:g}; 0,0: at once)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="WebSocket ping interval, as the real service pings (default 20; 0: no pings)",
    )
    parser.add_argument("--script", metavar="FILE", help="scripted-model YAML (fixed replies, tool calls)")
    parser.add_argument("--chaos", metavar="PLAN", help="fault plan, e.g. drop@2%%:within=60")
    parser.add_argument(
        "--webrtc-setup-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="end an answered WebRTC call whose ICE/DTLS has not connected by then (default 10; 0: never)",
    )
    parser.add_argument(
        "--webhook-secret",
        metavar="SECRET",
        help="the secret SIP `realtime.call.incoming` webhooks are signed with, as your webhook endpoint's "
        f"client verifies them (default: the test secret {DEFAULT_WEBHOOK_SECRET})",
    )
    parser.add_argument(
        "--webhook-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long one webhook delivery may take (default 10)",
    )
    parser.add_argument(
        "--sip-ring-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a SIP call nobody accepts or rejects by then is missed (default 60; 0: rings forever)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="origin a browser page may call the REST endpoints from (repeatable; default *, as the real "
        "service: every origin)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="close sessions after this long without activity (streaming-session rule)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS and WSS with a local CA made at start (its certificate is printed and written "
        "to --tls-ca-file)",
    )
    parser.add_argument(
        "--tls-ca-file",
        metavar="PATH",
        help="with --tls: where the local CA certificate is written (default: a temporary directory); with "
        "--tls-cert: the CA that issued it",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve this certificate (implies --tls)")
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--max-sessions-per-key",
        type=int,
        metavar="N",
        help="concurrent-session limit per key; the refusal names the open sessions",
    )


def _seconds_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH seconds, got {text!r}") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, got {text!r}")
    return low, high


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=getattr(args, "host", "127.0.0.1"),
        port=getattr(args, "port", 0),
        profile=args.profile,
        max_session=args.max_session,
        token_ttl=args.token_ttl,
        api_keys=list(args.api_key),
        seed=args.seed if args.seed is not None else 0,
        # Without an explicit --seed nobody relies on reproducible ids, so an outsider must not predict them.
        id_secret="" if args.seed is not None else secrets.token_hex(16),
        response_latency=args.response_latency,
        mcp_latency=args.mcp_latency,
        record_dir=args.record,
        expiry_ending=args.expiry_ending,
        models=args.models,
        context_window=args.context_window,
        pacing=args.pacing,
        transcription_delay=args.transcription_delay,
        ping_interval=args.ping_interval or None,
        script=args.script,
        chaos=args.chaos,
        idle_timeout=args.idle_timeout,
        max_sessions_per_key=args.max_sessions_per_key,
        admin_token=getattr(args, "admin_token", None),
        history_limit=getattr(args, "history_limit", None),
        webrtc_setup_timeout=getattr(args, "webrtc_setup_timeout", 10.0) or None,
        webhook_secret=getattr(args, "webhook_secret", None) or DEFAULT_WEBHOOK_SECRET,
        webhook_timeout=getattr(args, "webhook_timeout", 10.0),
        sip_ring_timeout=getattr(args, "sip_ring_timeout", 60.0) or None,
        tls=args.tls or args.tls_cert is not None,
        tls_ca_file=args.tls_ca_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        cors_origins=list(getattr(args, "cors_origin", None) or cors.DEFAULT_ORIGINS),
        gc_policy=getattr(args, "gc", "python"),
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the fake Realtime server",
        description="Run the fake Realtime server. Prints its base URL when ready.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--admin-token", help="required by the control API when bound beyond loopback")
    parser.add_argument(
        "--history-limit",
        type=int,
        default=200_000,
        metavar="RECORDS",
        help="history records kept in memory for the control API (default 200000; --record keeps "
        "all on disk)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N processes behind one port (SO_REUSEPORT), sharing RTSIM_SECRET; the control API on the "
        "port reaches every one",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop: asyncio's own, or uvloop (pip install 'rtsim[fast]'); measured no faster here "
        "at 200 sessions, offered to measure on other machines",
    )
    parser.add_argument(
        "--gc",
        choices=("quiet", "python"),
        default="quiet",
        help="quiet (default): full garbage collections wait for a moment with no response in progress "
        "(at most 120 s), so they do not stall paced audio; python: CPython's own schedule",
    )
    add_server_options(parser)
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.tls and config.tls_cert is None and config.tls_ca_file is None:
        config.tls_ca_file = tls.default_ca_path()  # chosen here so the trust lines can name it

    def ready(base_url: str) -> None:
        print(base_url, flush=True)  # the first line is the base URL: scripts read it
        if config.tls:
            print("\n".join(tls.trust_lines(config.tls_ca_file)), flush=True)

    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if getattr(args, "loop", "asyncio") == "uvloop":
        try:
            import uvloop
        except ModuleNotFoundError:
            print("rtsim serve: --loop uvloop needs uvloop (pip install 'rtsim[fast]')", file=sys.stderr)
            return 2
        run = uvloop.run
    workers = getattr(args, "workers", 1)
    if workers < 1:
        print("rtsim serve: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        if workers > 1:
            from .workers import supervise

            if config.chaos:
                plan.parse(config.chaos)  # a plan that does not parse is refused here, not by every worker
            return asyncio.run(supervise(config, workers, loop=args.loop, ready=ready))
        run(serve_forever(config, ready))
    except tls.TLSConfigError as exc:
        print(f"rtsim serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rtsim serve: {exc}", file=sys.stderr)
        return 1
    except RealtimeError as exc:  # e.g. a --chaos plan that does not parse
        print(f"rtsim serve: {exc.message}", file=sys.stderr)
        return 2
    return 0
