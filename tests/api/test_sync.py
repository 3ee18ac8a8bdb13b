"""`rtsim.SyncSimulator`: the same API for plain (non-async) tests, the server on its own loop in a thread."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import rtsim


def open_session(sim: rtsim.SyncSimulator) -> tuple[ClientConnection, str]:
    url = sim.base_url.replace("http://", "ws://", 1) + "/realtime?model=gpt-realtime"
    ws = connect(url, additional_headers={"Authorization": f"Bearer {sim.api_key}"}, max_queue=None)
    created = json.loads(ws.recv(timeout=5))
    assert created["type"] == "session.created"
    return ws, created["session"]["id"]


def test_a_plain_test_drives_a_session_and_a_drop() -> None:
    with rtsim.SyncSimulator(pacing=0.0) as sim:
        assert sim.running and sim.base_url.startswith("http://127.0.0.1:")
        ws, session_id = open_session(sim)
        assert [s["session"] for s in sim.sessions()] == [session_id]
        ws.send(json.dumps({"type": "response.create"}))
        done = sim.wait_for("response.done", timeout=5)
        assert done["session"] == session_id and done["event"]["response"]["status"] == "completed"
        outcome = sim.inject("drop", session=session_id)
        assert outcome["applied_to"] == [session_id]
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is None  # no close frame: the client reports 1006
        close = sim.wait_for(kind="close", session=session_id)
        assert close["code"] == 1006 and close["fault"] == "drop"
        assert sim.history.faults("drop")[0]["route"] == "python-api"
        assert sim.history.events("response.done", direction="out") == [done]
        assert sim.sessions() == []
    assert not sim.running
    assert sim.history.select(kind="server")[-1]["event"] == "stop"
    assert len(sim.history) == len(sim.history.records) > 0


def test_the_control_api_answers_while_a_test_blocks_in_the_simulator() -> None:
    with rtsim.SyncSimulator() as sim:
        ws, session_id = open_session(sim)
        with urllib.request.urlopen(f"{sim.control_url}/_rtsim/sessions", timeout=5) as response:
            listed = json.load(response)["sessions"]
        assert [s["session"] for s in listed] == [session_id]
        scheduled = sim.inject("close", when=50, code=1013)
        assert "scheduled" in scheduled
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


def test_wait_for_times_out_and_bad_requests_raise_in_the_caller() -> None:
    with rtsim.SyncSimulator() as sim:
        with pytest.raises(TimeoutError):
            sim.wait_for("response.done", timeout=0.2)
        with pytest.raises(rtsim.RealtimeError, match="No live session"):
            sim.inject("drop", session="sess_gone")
    with pytest.raises(RuntimeError, match="not running"):
        sim.inject("drop")


def test_a_blocking_subprocess_client_runs_with_env() -> None:
    script = (
        "import json, os\n"
        "from websockets.sync.client import connect\n"
        "url = os.environ['OPENAI_BASE_URL'].replace('http', 'ws', 1) + '/realtime?model=gpt-realtime'\n"
        "auth = {'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']}\n"
        "with connect(url, additional_headers=auth) as ws:\n"
        "    ws.send(json.dumps({'type': 'response.create'}))\n"
        "    while json.loads(ws.recv())['type'] != 'response.done':\n"
        "        pass\n"
    )
    with rtsim.SyncSimulator(pacing=0.0) as sim:
        finished = subprocess.run([sys.executable, "-c", script], env=sim.env, timeout=60, check=False)
        assert finished.returncode == 0
        (done,) = sim.history.events("response.done", key_id=sim.key_id)
        assert sim.wait_for(kind="close", session=done["session"])["by"] == "client"
