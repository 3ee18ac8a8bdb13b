"""`rtsim scenario from-trace`: a recorded session of the naive client hitting a drop becomes a scenario that
fails the naive client for that reason and passes the reference client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from rtsim.scenarios.from_trace import scenario_from_records
from rtsim.scenarios.runner import ClientSpec, run_one
from rtsim.scenarios.spec import from_dict, load
from rtsim.simulator.cli import main as rtsim
from rtsim.simulator.history import History

# The session to record: two turns, the connection drops (1006) one second in, while the first reply plays.
RECORDED = {
    "name": "recorded",
    "duration": 3.5,
    "user": [{"at": 0.2, "say": "My name is Alice."}, {"at": 2.0, "say": "What is my name?"}],
    "faults": [{"at": 1.0, "kind": "drop"}],
}


def _as_production_trace(path: Path) -> Path:
    """The trace without rtsim's notes of the fault it injected: only what a real service's trace shows."""
    records = [r for r in History.load(path) if r["kind"] != "fault"]
    for record in records:
        record.pop("fault", None)
    trace = path.with_name("trace.jsonl")
    trace.write_text("".join(json.dumps(r) + "\n" for r in records))
    return trace


def test_a_recorded_drop_becomes_a_scenario_that_fails_naive_and_passes_reference(tmp_path: Path) -> None:
    recording = asyncio.run(
        run_one(from_dict(RECORDED), ClientSpec.named("naive"), out_dir=tmp_path / "recording")
    )
    assert recording.history_path is not None
    trace = _as_production_trace(recording.history_path)
    output = tmp_path / "repro.yaml"

    assert rtsim(["scenario", "from-trace", str(trace), "-o", str(output)]) == 0

    written = yaml.safe_load(output.read_text())
    assert [f["kind"] for f in written["faults"]] == ["drop"]
    assert written["user"][0]["say"] == "My name is Alice."
    check_names = [next(iter(c)) if isinstance(c, dict) else c for c in written["checks"]]
    assert "reconnected_within" in check_names
    scenario = load(output)

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(
                run_one(scenario, ClientSpec.named("naive"), out_dir=tmp_path / "naive"),
                run_one(scenario, ClientSpec.named("reference"), out_dir=tmp_path / "reference"),
            )
        )

    naive, reference = asyncio.run(both())
    failed = {v.name: v.reason for v in naive.verdicts if not v.ok}
    # the recorded reason: the naive client sat out its fixed 5 s before reconnecting
    assert "reconnected_within" in failed, failed
    assert "1006" in failed["reconnected_within"]
    assert reference.passed, [(v.name, v.reason) for v in reference.verdicts if not v.ok]


def _record(t: float, kind: str, **fields: Any) -> dict[str, Any]:
    return {"seq": 0, "t": t, "wall": 1000 + t, "kind": kind, **fields}


def _out(t: float, event_type: str, **fields: Any) -> dict[str, Any]:
    return _record(t, "event", dir="out", session="s1", event={"type": event_type, **fields})


def test_a_close_code_becomes_a_close_fault_after_the_event_it_followed() -> None:
    records = [
        _record(0.0, "server", event="start", config={"profile": "openai", "pacing": 1.0}),
        _record(1.0, "handshake", conn="c1", accepted=True, key_id="k"),
        _record(1.0, "session", session="s1", conn="c1", key_id="k"),
        _record(
            1.2,
            "event",
            dir="in",
            session="s1",
            event={
                "type": "conversation.item.create",
                "item": {"role": "user", "content": [{"type": "input_text", "text": "Hello there."}]},
            },
        ),
        _out(1.3, "response.created"),
        _out(1.9, "response.done", response={"status": "completed"}),
        _record(2.4, "close", session="s1", conn="c1", code=1011, reason="internal", by="server"),
    ]
    scenario = scenario_from_records(records, name="closed")
    assert scenario["faults"] == [
        {
            "after": {"event": "response.done", "nth": 1, "delay": 0.5},
            "kind": "close",
            "params": {"code": 1011, "reason": "internal"},
        }
    ]
    assert scenario["user"] == [{"at": 0.4, "say": "Hello there."}]  # from the client's first connect
    assert {"reconnected_within": {"seconds": 5}} in scenario["checks"]
    assert from_dict(scenario).faults[0].after_event == "response.done"


def test_the_session_cap_becomes_the_max_session_setting_and_a_refused_token_expire_tokens() -> None:
    records = [
        _record(0.0, "handshake", conn="c1", accepted=True, key_id="k"),
        _record(0.0, "session", session="s1", conn="c1", key_id="k"),
        _out(6.0, "error", error={"type": "invalid_request_error", "code": "session_expired"}),
        _record(6.0, "close", session="s1", conn="c1", code=1001, reason="session expired", by="server"),
        _record(6.5, "handshake", conn="c2", accepted=False, status=401, reason="token_expired", key_id="k"),
    ]
    scenario = scenario_from_records(records)
    assert scenario["server"]["max_session"] == 6.0
    assert scenario["server"]["expiry_ending"] == "both"
    assert [f["kind"] for f in scenario["faults"]] == ["expire-tokens"]
    assert {"rotation_before_expiry": {"max_gap": 2}} in scenario["checks"]
    assert "tokens_not_retried_blindly" in scenario["checks"]
