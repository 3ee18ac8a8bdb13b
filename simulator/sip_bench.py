"""`rtsim bench sip`: figures, not pass/fail. What a SIP call costs one `rtsim serve` process.

For each level N it starts `rtsim serve` as its own process, rings N calls through the control API at a
webhook endpoint in this process that verifies each with the official SDK (`client.webhooks.unwrap`) and
accepts it (`client.realtime.calls.accept`) before answering 200, as a SIP application does. It prints the
ring-to-accepted time (webhook signed, delivered, verified, the accept served) and the server's CPU while
the N accepted calls sit idle — each is fed 20 ms of line audio every 20 ms, as a phone line is.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from .bench import _cpu_seconds
from .demo import start_server
from .server import DEFAULT_WEBHOOK_SECRET

KEY = "sk-bench"
IDLE_SECONDS = 5.0


async def _measure(base_url: str, pid: int, calls: int) -> dict[str, Any]:
    import aiohttp
    from aiohttp import web
    from openai import AsyncOpenAI

    root = base_url[: -len("/v1")]
    async with AsyncOpenAI(base_url=base_url, api_key=KEY, webhook_secret=DEFAULT_WEBHOOK_SECRET) as sdk:

        async def webhook(request: web.Request) -> web.Response:
            event = sdk.webhooks.unwrap(await request.read(), request.headers)
            await sdk.realtime.calls.accept(event.data.call_id, type="realtime")  # type: ignore[union-attr]
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/webhook", webhook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/webhook"
        took: list[float] = []
        accepted = 0
        async with aiohttp.ClientSession() as http:

            async def ring() -> None:
                nonlocal accepted
                started = time.perf_counter()
                async with http.post(f"{root}/_rtsim/sip/calls", json={"webhook_url": url}) as response:
                    body = await response.json()
                took.append(time.perf_counter() - started)
                accepted += body.get("state") == "accepted"

            await asyncio.gather(*(ring() for _ in range(calls)))
            cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(IDLE_SECONDS)
            cpu = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
        await runner.cleanup()
    took.sort()
    return {
        "calls": calls,
        "accepted": accepted,
        "ring_to_accepted_p50_ms": round(statistics.median(took) * 1000, 1),
        "ring_to_accepted_max_ms": round(took[-1] * 1000, 1),
        "idle_server_cpu_pct": round(cpu * 100, 1),
        "idle_cpu_pct_per_call": round(cpu * 100 / calls, 2),
    }


def bench_sip(levels: list[int]) -> list[dict[str, Any]]:
    rows = []
    for calls in levels:
        proc, base_url = start_server("--api-key", KEY, "--sip-ring-timeout", "0")
        try:
            row = asyncio.run(_measure(base_url, proc.pid, calls))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        rows.append(row)
    return rows
