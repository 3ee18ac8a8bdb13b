"""A real third-party SIP client against rtsim: the OpenAI Agents SDK's `OpenAIRealtimeSIPModel`, as its
`examples/realtime/twilio_sip` server uses it — verify the webhook with `client.webhooks.unwrap()`, accept
with the payload `OpenAIRealtimeSIPModel.build_initial_session_payload(agent)` builds, then run the agent
over the call's WebSocket (`?call_id=`), where the SDK sends its own `session.update` and the conversation
runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from agents import set_tracing_disabled
from agents.realtime import RealtimeAgent, RealtimeRunner
from agents.realtime.items import AssistantMessageItem
from agents.realtime.openai_realtime import OpenAIRealtimeSIPModel
from aiohttp import ClientSession, web
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from rtsim.simulator.server import DEFAULT_WEBHOOK_SECRET, RealtimeServer
from tests.support.engine import validate_ga

KEY = "sk-test-key"


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RealtimeServer:
    set_tracing_disabled(True)  # the agents SDK exports nothing anywhere
    return await server_factory(pacing=0.0)


@pytest.fixture
async def webhook(server: RealtimeServer) -> AsyncIterator[tuple[str, asyncio.Queue[str]]]:
    """The application's webhook endpoint, as the twilio_sip example's: unwrap, accept, hand the call on."""
    accepted: asyncio.Queue[str] = asyncio.Queue()
    agent = RealtimeAgent(name="Concierge", instructions="You are Alex, a friendly concierge.")
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, webhook_secret=DEFAULT_WEBHOOK_SECRET)

    async def handle(request: web.Request) -> web.Response:
        event = client.webhooks.unwrap(await request.read(), request.headers)
        assert isinstance(event, RealtimeCallIncomingWebhookEvent)
        payload = await OpenAIRealtimeSIPModel.build_initial_session_payload(agent)
        await client.realtime.calls.accept(event.data.call_id, **payload.model_dump(exclude_none=True))
        await accepted.put(event.data.call_id)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/openai/webhook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/openai/webhook", accepted
    await runner.cleanup()
    await client.close()


async def test_the_agents_sdk_sip_model_answers_a_call(
    server: RealtimeServer, webhook: tuple[str, asyncio.Queue[str]]
) -> None:
    url, accepted = webhook
    async with (
        ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}/_rtsim/sip/calls", json={"webhook_url": url}) as rung,
    ):
        outcome = await rung.json()
    assert outcome["webhook"]["status"] == 200, outcome
    call_id = await asyncio.wait_for(accepted.get(), 5)
    accept = next(r for r in server.history.select(kind="sip") if r["event"] == "accepted")
    assert accept["call_id"] == call_id

    agent = RealtimeAgent(name="Concierge", instructions="You are Alex, a friendly concierge.")
    runner = RealtimeRunner(agent, model=OpenAIRealtimeSIPModel())
    model_config: Any = {
        "call_id": call_id,
        "api_key": KEY,
        "url": f"ws://127.0.0.1:{server.port}/v1/realtime?call_id={call_id}",
    }
    replies: list[AssistantMessageItem] = []
    async with await runner.run(model_config=model_config) as session:
        await session.send_message("Hello, I would like to book a table.")

        async def until_a_reply() -> None:
            async for event in session:
                if event.type == "error":
                    raise AssertionError(f"the agents SDK saw an error: {event.error}")
                if event.type == "history_added" and isinstance(event.item, AssistantMessageItem):
                    replies.append(event.item)
                if event.type == "agent_end" and replies:
                    return

        await asyncio.wait_for(until_a_reply(), 15)
    assert replies and replies[-1].role == "assistant"
    live = server.history.select(kind="session")
    assert live[-1]["call_id"] == call_id and live[-1]["transport"] == "sip"
    # What the SDK sent on the call's socket was the real GA shape, and every event it got validates.
    sent = [r["event"] for r in server.history.select(kind="event") if r.get("dir") == "in"]
    assert {"session.update", "conversation.item.create", "response.create"} <= {e["type"] for e in sent}
    assert not [
        r
        for r in server.history.select(kind="event")
        if r.get("dir") == "out" and r["event"]["type"] == "error"
    ]
    for record in server.history.select(kind="event"):
        if record.get("dir") == "out":
            validate_ga(json.loads(json.dumps(record["event"])))
