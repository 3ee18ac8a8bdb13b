"""`rtsim.Simulator`: a simulator in a user's own async test, reached over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import rtsim
from rtsim.simulator.faults import CATALOGUE
from rtsim.simulator.tokens import key_id


def realtime_url(sim: rtsim.Simulator) -> str:
    return sim.base_url.replace("http://", "ws://", 1) + "/realtime?model=gpt-realtime"


async def open_session(sim: rtsim.Simulator, key: str | None = None) -> tuple[ClientConnection, str]:
    """A raw websockets client on the simulator's base URL; returns it and its session id.

    Its queue is unbounded: a test that leaves a response unread can still finish the close handshake.
    """
    auth = {"Authorization": f"Bearer {key or sim.api_key}"}
    ws = await connect(realtime_url(sim), additional_headers=auth, max_queue=None)
    created = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert created["type"] == "session.created"
    return ws, created["session"]["id"]


async def read_until_closed(ws: ClientConnection, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every event until the connection ends; `ws.close_code` then says how (1006: no close frame)."""
    events = []
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                events.append(json.loads(await ws.recv()))
    return events


async def test_base_url_env_and_key_belong_to_this_simulator() -> None:
    async with rtsim.Simulator() as first, rtsim.Simulator() as second:
        assert first.base_url.startswith("http://127.0.0.1:") and first.base_url.endswith("/v1")
        assert first.base_url != second.base_url
        assert first.api_key != second.api_key and first.api_key.startswith("sk-")
        assert first.key_id == key_id(first.api_key)
        env = first.env
        assert env["OPENAI_BASE_URL"] == first.base_url
        assert env["OPENAI_API_KEY"] == first.api_key
        assert env["PATH"]  # a whole environment, ready for a subprocess
    async with rtsim.Simulator(api_key="sk-mine", profile="azure") as sim:
        assert sim.env["OPENAI_API_KEY"] == sim.env["AZURE_OPENAI_API_KEY"] == "sk-mine"
        assert sim.env["AZURE_OPENAI_ENDPOINT"] == sim.base_url.removesuffix("/v1")


async def test_server_config_fields_are_options_and_unknown_ones_are_refused() -> None:
    async with rtsim.Simulator(profile="openai-beta", max_session=2, seed=7, pacing=0.0) as sim:
        assert sim.server.config.max_session == 2 and sim.server.config.seed == 7
        ws, _ = await open_session(sim)
        await ws.send(json.dumps({"type": "response.create"}))
        # the beta dialect's name for the audio delta: the profile reached the wire
        assert await sim.wait_for("response.audio.delta", timeout=5)
        await ws.close()
    with pytest.raises(TypeError, match="max_sesion"):
        rtsim.Simulator(max_sesion=3)


async def test_sessions_are_what_the_control_api_lists() -> None:
    async with rtsim.Simulator() as sim:
        assert sim.sessions() == []
        ws, session_id = await open_session(sim)
        listed = sim.sessions()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sim.control_url}/_rtsim/sessions") as response:
                over_http = (await response.json())["sessions"]
        assert [s["session"] for s in listed] == [session_id]
        assert listed[0]["key_id"] == sim.key_id
        drop_age = [{k: v for k, v in s.items() if k != "age_s"} for s in (*listed, *over_http)]
        assert drop_age[0] == drop_age[1]
        await ws.close()
        await sim.wait_for(kind="close", session=session_id)
        assert sim.sessions() == []


async def test_drop_is_a_1006_for_the_client_and_a_close_record() -> None:
    async with rtsim.Simulator(pacing=0.0) as sim:
        ws, session_id = await open_session(sim)
        outcome = await sim.inject("drop", session=session_id)
        assert outcome["applied_to"] == [session_id]
        await read_until_closed(ws)
        assert ws.close_code == 1006  # the code a client reports when no close frame came
        close = await sim.wait_for(kind="close", session=session_id)
        assert close["fault"] == "drop" and close["code"] == 1006
        assert sim.history.closes(session=session_id) == [close]
        (fault,) = sim.history.faults("drop")
        assert fault["route"] == "python-api" and fault["session"] == session_id


async def test_kind_may_be_a_catalogue_entry_and_params_are_keywords() -> None:
    async with rtsim.Simulator() as sim:
        ws, _ = await open_session(sim)
        await sim.inject(CATALOGUE["close"], key=sim.api_key, code=1011, reason="internal")
        await read_until_closed(ws)
        assert (ws.close_code, ws.close_reason) == (1011, "internal")
        assert sim.history.faults("close")[0]["params"]["code"] == 1011


async def test_a_fault_by_key_id_hits_only_that_key() -> None:
    async with rtsim.Simulator() as sim:
        mine, my_session = await open_session(sim)
        theirs, their_session = await open_session(sim, key="sk-someone-else")
        outcome = await sim.inject("close", key_id=sim.key_id, code=1001)
        assert outcome["applied_to"] == [my_session]
        await read_until_closed(mine)
        assert [s["session"] for s in sim.sessions()] == [their_session]
        await theirs.close()
        with pytest.raises(ValueError, match="at most one target"):
            await sim.inject("drop", session=my_session, key=sim.api_key)


async def test_when_in_milliseconds_schedules_and_fires() -> None:
    async with rtsim.Simulator() as sim:
        ws, session_id = await open_session(sim)
        outcome = await sim.inject("close", session=session_id, when=100, code=4000)
        assert outcome["scheduled"].startswith("fault_") and outcome["when"] == {"after_ms": 100}
        assert sim.history.closes() == []  # not yet
        await read_until_closed(ws)
        assert ws.close_code == 4000
        scheduled = sim.history.select(kind="fault_scheduled")
        fired = sim.history.faults("close", session=session_id)
        assert len(scheduled) == 1 and fired[0]["t"] - scheduled[0]["t"] >= 0.09


@pytest.mark.parametrize(
    "when",
    [("response.output_audio.delta", 3), {"at_event": {"type": "response.output_audio.delta", "nth": 3}}],
)
async def test_when_at_an_event_drops_right_after_it(when: Any) -> None:
    async with rtsim.Simulator(pacing=0.0) as sim:
        ws, session_id = await open_session(sim)
        outcome = await sim.inject("drop", session=session_id, when=when)
        assert outcome["when"] == {"at_event": {"type": "response.output_audio.delta", "nth": 3}}
        await ws.send(json.dumps({"type": "response.create"}))
        received = await read_until_closed(ws)
        assert ws.close_code == 1006
        assert [e["type"] for e in received].count("response.output_audio.delta") == 3
        assert sim.history.events("response.done", session=session_id) == []


async def test_a_bad_request_raises_the_control_planes_error() -> None:
    async with rtsim.Simulator() as sim:
        with pytest.raises(rtsim.RealtimeError, match="Unknown fault kind 'dorp'"):
            await sim.inject("dorp")
        with pytest.raises(rtsim.RealtimeError) as refused:
            await sim.inject("close", code=99)
        assert refused.value.param == "params.code"
        with pytest.raises(TypeError):
            await sim.inject("drop", when="soon")


async def test_wait_for_returns_the_next_matching_record_or_times_out() -> None:
    async with rtsim.Simulator(pacing=0.0) as sim:
        ws, session_id = await open_session(sim)
        waiter = asyncio.create_task(sim.wait_for("response.done", timeout=5))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await ws.send(json.dumps({"type": "response.create"}))
        done = await waiter
        assert done["kind"] == "event" and done["dir"] == "out" and done["session"] == session_id
        assert done["event"]["type"] == "response.done"
        # Already recorded: returned at once. `since` asks for a later one.
        assert await sim.wait_for("response.done", timeout=0.1) == done
        with pytest.raises(TimeoutError, match=r"response\.done"):
            await sim.wait_for("response.done", since=done["seq"] + 1, timeout=0.2)
        await ws.send(json.dumps({"type": "response.create"}))
        second = await sim.wait_for("response.done", since=done["seq"] + 1, timeout=5)
        assert second["seq"] > done["seq"]
        await ws.close()


async def test_wait_for_a_predicate_over_records() -> None:
    async with rtsim.Simulator() as sim:
        waiter = asyncio.create_task(
            sim.wait_for(lambda r: r["kind"] == "handshake" and not r["accepted"], timeout=5)
        )
        await asyncio.sleep(0.05)
        with pytest.raises(Exception, match="401"):
            await connect(realtime_url(sim), additional_headers={"Authorization": "Bearer ek_forged"})
        refused = await waiter
        assert refused["status"] == 401
        assert sim.history.handshakes(accepted=False) == [refused]


async def test_history_queries_filter_by_kind_session_key_and_direction() -> None:
    async with rtsim.Simulator(pacing=0.0) as sim:
        mine, my_session = await open_session(sim)
        theirs, their_session = await open_session(sim, key="sk-other-client")
        await mine.send(json.dumps({"type": "response.create"}))
        await sim.wait_for("response.done", session=my_session, timeout=5)
        created = sim.history.events("session.created", direction="out")
        assert [r["session"] for r in created] == [my_session, their_session]
        assert sim.history.events("response.create", direction="in") == sim.history.events(
            "response.create", session=my_session
        )
        assert sim.history.events("response.create", direction="out") == []
        assert {r["session"] for r in sim.history.events(key_id=sim.key_id)} == {my_session}
        assert [r["session"] for r in sim.history.sessions(key_id=sim.key_id)] == [my_session]
        assert sim.history.last("response.done")["session"] == my_session
        assert sim.history.first(kind="server")["event"] == "start"
        await mine.close()
        await theirs.close()
        await sim.wait_for(kind="close", session=their_session)
        closes = sim.history.closes(by="client")
        assert {c["session"] for c in closes} == {my_session, their_session}
        assert sim.history.closes(code=1006) == []
        (who,) = [i for i in sim.history.summary()["identities"] if i["key_id"] == sim.key_id]
        assert len(who["connections"]) == 1
    assert sim.history.select(kind="server")[-1]["event"] == "stop"  # still readable after the block


async def test_the_official_sdk_on_base_url_meets_an_injected_close() -> None:
    async with rtsim.Simulator(pacing=0.0) as sim:
        client = AsyncOpenAI(base_url=sim.base_url, api_key=sim.api_key)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            seen = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    async for event in conn:
                        seen.append(event.type)
                        if event.type == "session.created":
                            await conn.response.create()
                        elif event.type == "response.done":
                            await sim.inject("close", code=1008, reason="policy")
        assert seen[0] == "session.created" and "response.done" in seen
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert sim.history.closes(code=1008, by="server")


async def test_a_subprocess_client_connects_with_env() -> None:
    script = (
        "import json, os\n"
        "from websockets.sync.client import connect\n"
        "url = os.environ['OPENAI_BASE_URL'].replace('http', 'ws', 1) + '/realtime?model=gpt-realtime'\n"
        "auth = {'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']}\n"
        "with connect(url, additional_headers=auth) as ws:\n"
        "    print(json.loads(ws.recv())['type'])\n"
    )
    async with rtsim.Simulator() as sim:
        # An async suite runs its client without blocking the loop that serves it.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=sim.env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0 and out.decode().strip() == "session.created"
        (session,) = sim.history.sessions()
        assert session["key_id"] == sim.key_id


async def test_wait_for_by_key_follows_sessions_that_begin_while_waiting() -> None:
    async with rtsim.Simulator(pacing=0.0) as sim:
        # Event records name only their session: the key's sessions are learnt as they begin.
        waiter = asyncio.create_task(sim.wait_for("response.done", key_id=sim.key_id, timeout=5))
        other, _ = await open_session(sim, key="sk-other-client")
        await other.send(json.dumps({"type": "response.create"}))
        await sim.wait_for("response.done", key_id=key_id("sk-other-client"), timeout=5)
        await asyncio.sleep(0.05)
        assert not waiter.done()
        mine, my_session = await open_session(sim)
        await mine.send(json.dumps({"type": "response.create"}))
        assert (await waiter)["session"] == my_session
        await mine.close()
        await other.close()


async def test_a_simulator_runs_once() -> None:
    sim = rtsim.Simulator()
    with pytest.raises(RuntimeError, match="running simulator"):
        sim.env  # noqa: B018  (the property raises)
    async with sim:
        assert sim.running
    assert not sim.running
    with pytest.raises(RuntimeError, match="stopped"):
        await sim.start()
