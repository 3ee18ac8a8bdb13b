"""`rtsim record` (a recording proxy in front of another rtsim) and `rtsim replay` (the recorded server side
served to the official SDK), over the three trace formats `rtsim.scenarios.trace.load` reads."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtsim.scenarios import trace
from rtsim.simulator.record import PROXY_FAULTS, ProxyConfig, RecordingProxy
from rtsim.simulator.replay import ReplayServer
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.tokens import key_id
from tests.support.clients import until
from tests.support.traces import sdk_text_turn, start_rtsim, stop, to_har, to_plain_jsonl

KEY = "sk-record-replay-secret-key-0123456789"
RECORDED_CLOSE = (1011, "upstream went wrong")


@dataclass
class Recorded:
    path: Path
    token: str
    seen: list[tuple[str, str]]  # (type, event_id) of every server event the SDK saw through the proxy
    close: tuple[int, str]


async def _record_session(
    proxy_url: str, upstream_url: str
) -> tuple[str, list[tuple[str, str]], tuple[int, str]]:
    client = AsyncOpenAI(base_url=proxy_url, api_key=KEY)
    secret = await client.realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime"}
    )
    control = upstream_url.removesuffix("/v1") + "/_rtsim/faults"

    async def upstream_closes() -> None:  # the upstream ends the session; the proxy must pass it on
        code, reason = RECORDED_CLOSE
        async with aiohttp.ClientSession() as http:
            fault = {"kind": "close", "params": {"code": code, "reason": reason}, "target": {"all": True}}
            async with http.post(control, json=fault) as response:
                assert response.status == 200, await response.text()

    seen, ended = await sdk_text_turn(proxy_url, KEY, after_response=upstream_closes)
    assert ended is not None and ended.rcvd is not None
    return secret.value, seen, (ended.rcvd.code, ended.rcvd.reason)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """One session recorded through `rtsim record` in front of `rtsim serve` (both real processes)."""
    out = tmp_path_factory.mktemp("record") / "trace.jsonl"
    upstream, upstream_url = start_rtsim("serve", "--port", "0", "--pacing", "0")
    proxy, proxy_url = start_rtsim("record", "--upstream", upstream_url, "--out", str(out), "--port", "0")
    try:
        token, seen, close = asyncio.run(_record_session(proxy_url, upstream_url))
    finally:
        stop(proxy)
        stop(upstream)
    return Recorded(out, token, seen, close)


def test_the_proxy_passes_the_session_through_and_the_trace_keeps_no_credential(recorded: Recorded) -> None:
    assert recorded.close == RECORDED_CLOSE  # the upstream's close code and reason reached the client
    raw = recorded.path.read_bytes()
    assert KEY.encode() not in raw and recorded.token.encode() not in raw
    assert key_id(KEY).encode() in raw  # who it was stays: as a fingerprint
    records = trace.load(recorded.path)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "server" and kinds[-1] == "server"
    (http,) = [r for r in records if r["kind"] == "http"]
    assert (http["path"], http["status"], http["key_id"]) == ("/v1/realtime/client_secrets", 200, key_id(KEY))
    (handshake,) = [r for r in records if r["kind"] == "handshake"]
    assert handshake["accepted"] and handshake["status"] == 101 and handshake["auth"] == "api_key"
    out = [r["event"] for r in records if r["kind"] == "event" and r["dir"] == "out"]
    assert [(e["type"], e["event_id"]) for e in out] == recorded.seen  # every frame, in order
    sent = [r["event"]["type"] for r in records if r["kind"] == "event" and r["dir"] == "in"]
    assert sent == ["conversation.item.create", "response.create"]
    deltas = [e for e in out if e["type"] == "response.output_audio.delta"]
    assert deltas and all(len(e["delta"]) > 100 for e in deltas)  # audio kept in full by default
    (close,) = [r for r in records if r["kind"] == "close"]
    assert (close["code"], close["reason"], close["by"]) == (*RECORDED_CLOSE, "server")


def test_a_recorded_session_replays_to_the_sdk(recorded: Recorded) -> None:
    replay, url = start_rtsim("replay", str(recorded.path), "--max-gap", "0.5", "--port", "0")
    try:
        seen, ended = asyncio.run(sdk_text_turn(url, "sk-any-key-will-do"))
        replay.wait(timeout=10)  # it exits once the recorded connection was replayed
    finally:
        printed = stop(replay)
    assert seen == recorded.seen  # the same server events (ids too), in the same order
    assert ended is not None and ended.rcvd is not None
    assert (ended.rcvd.code, ended.rcvd.reason) == RECORDED_CLOSE  # and the recorded close
    assert "divergences: 0" in printed and replay.returncode == 0


@pytest.mark.parametrize("fmt", ["har", "jsonl"])
async def test_a_har_and_a_plain_jsonl_trace_replay(recorded: Recorded, tmp_path: Path, fmt: str) -> None:
    records = trace.load(recorded.path)
    path = tmp_path / f"trace.{fmt}"
    path.write_text(json.dumps(to_har(records)) if fmt == "har" else to_plain_jsonl(records))
    assert trace.detect(path.read_text()) == fmt
    server = ReplayServer(trace.load(path), max_gap=0.5)
    await server.start()
    try:
        # A HAR knows no close (DevTools does not save it): the client ends when it has what was recorded.
        count = len(recorded.seen) if fmt == "har" else None
        seen, ended = await sdk_text_turn(server.base_url, "sk-any", count=count)
        await asyncio.wait_for(server.finished.wait(), 10)
    finally:
        await server.stop()
    assert seen == recorded.seen
    assert server.divergences == []
    if fmt == "jsonl":
        assert ended is not None and ended.rcvd is not None
        assert (ended.rcvd.code, ended.rcvd.reason) == RECORDED_CLOSE


async def test_a_divergent_client_is_reported_at_the_event_it_missed(recorded: Recorded) -> None:
    records = trace.load(recorded.path)
    first_sent = next(r for r in records if r["kind"] == "event" and r["dir"] == "in")
    server = ReplayServer(records, max_gap=0.5)
    await server.start()
    try:
        seen, _ = await sdk_text_turn(server.base_url, "sk-any", send_item=False)  # response.create only
        await asyncio.wait_for(server.finished.wait(), 10)
    finally:
        await server.stop()
    (divergence,) = server.divergences
    assert divergence["trace_seq"] == first_sent["seq"]
    assert divergence["expected"] == {
        "dir": "in",
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user"},
    }
    assert divergence["got"]["type"] == "response.create"
    assert server.history.select(kind="divergence") == [divergence]  # in the replay's own record
    assert [t for t, _ in seen] == [t for t, _ in recorded.seen]  # after it, the recorded timing goes on


# ---- the proxy in process: refusals, faults on proxied sessions, --no-audio --------------------------------


@pytest.fixture
async def proxy(server: RealtimeServer, tmp_path: Path) -> Any:
    proxy = RecordingProxy(
        ProxyConfig(upstream=server.base_url, out=str(tmp_path / "t.jsonl"), keep_audio=False)
    )
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_a_refused_handshake_comes_back_with_the_upstreams_status_and_body(
    proxy: RecordingProxy,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            f"ws://127.0.0.1:{proxy.port}/v1/realtime?model=gpt-realtime",
            additional_headers={"Authorization": "Bearer ek_forged"},
        )
    response = refused.value.response
    assert response.status_code == 401
    assert "ephemeral token" in json.loads(response.body)["error"]["message"]
    (handshake,) = proxy.history.select(kind="handshake")
    assert (handshake["accepted"], handshake["status"]) == (False, 401)


async def test_faults_are_injected_into_proxied_sessions(
    proxy: RecordingProxy, server: RealtimeServer
) -> None:
    control = f"http://127.0.0.1:{proxy.port}/_rtsim"

    async def drop_it() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{control}/catalogue") as response:
                assert {k["kind"] for k in (await response.json())["faults"]} == set(PROXY_FAULTS)
            async with http.post(f"{control}/faults", json={"kind": "expire-session"}) as response:
                assert response.status == 400  # an engine fault: there is no engine here
            async with http.post(
                f"{control}/faults", json={"kind": "drop", "target": {"all": True}}
            ) as response:
                assert response.status == 200, await response.text()

    _, ended = await sdk_text_turn(proxy.base_url, KEY, after_response=drop_it)
    assert ended is not None and ended.rcvd is None  # no close frame: the client saw 1006
    (close,) = await until(lambda: proxy.history.select(kind="close"))
    assert (close["code"], close["fault"], close["drop"]) == (1006, "drop", True)
    (fault,) = proxy.history.select(kind="fault")
    assert fault["fault"] == "drop" and fault["route"] == "control-api"
    deltas = [
        r["event"] for r in proxy.history.select(kind="event") if r["event"]["type"].endswith("audio.delta")
    ]
    assert deltas and all("delta" not in e and e["audio_bytes"] > 0 for e in deltas)  # --no-audio
    # The upstream session ended as the client's did: without a close frame.
    (upstream_close,) = await until(lambda: server.history.select(kind="close"))
    assert upstream_close["code"] == 1006


async def _post_fault(proxy: RecordingProxy, kind: str, params: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        fault = {"kind": kind, "params": params, "target": {"all": True}}
        async with http.post(f"http://127.0.0.1:{proxy.port}/_rtsim/faults", json=fault) as response:
            assert response.status == 200, await response.text()


@pytest.mark.parametrize(("kind", "params"), [("stall", {"seconds": 0.6}), ("latency", {"ms": 600})])
async def test_a_stall_or_latency_holds_the_upstreams_events(
    proxy: RecordingProxy, kind: str, params: dict[str, Any]
) -> None:
    protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]  # the browser's way to present a key
    async with connect(
        f"ws://127.0.0.1:{proxy.port}/v1/realtime?model=gpt-realtime",
        subprotocols=protocols,  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol == "realtime"  # the upstream's choice, passed back
        assert json.loads(await ws.recv())["type"] == "session.created"
        await _post_fault(proxy, kind, params)
        started = asyncio.get_running_loop().time()
        await ws.send(json.dumps({"type": "response.create"}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        waited = asyncio.get_running_loop().time() - started
        while json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] != "response.done":
            pass  # a close mid-response waits out the client close timeout (rtsim serve does the same)
    assert first["type"] == "response.created"
    assert 0.5 <= waited < 3.0, waited
    proxy.history.flush()
    raw = await asyncio.to_thread(Path(proxy.config.out).read_bytes)
    assert KEY.encode() not in raw  # nor in the recorded subprotocols
    (handshake,) = proxy.history.select(kind="handshake")
    assert handshake["key_id"] == key_id(KEY) and handshake["protocol"] == "realtime"


async def test_a_close_fault_on_a_proxied_session(proxy: RecordingProxy, server: RealtimeServer) -> None:
    async with connect(
        f"ws://127.0.0.1:{proxy.port}/v1/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {KEY}"},
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await _post_fault(proxy, "close", {"code": 1013, "reason": "try again later"})
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1013,
        "try again later",
    )
    (close,) = await until(lambda: proxy.history.select(kind="close"))
    assert (close["code"], close["by"]) == (1013, "server")
    (upstream_close,) = await until(lambda: server.history.select(kind="close"))
    assert (upstream_close["code"], upstream_close["by"]) == (
        1000,
        "client",
    )  # the upstream was told, cleanly
