"""The compatibility matrix's parts that need no framework installed: voice files for clients in any language,
the table, its reproduction commands, the README update. (`make compat` runs the matrix itself.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rtsim.clients.common import utterance
from rtsim.scenarios.checkers import Verdict
from rtsim.scenarios.runner import ClientSpec, RunResult, voice_audio_turns
from rtsim.scenarios.spec import LIBRARY, load
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def matrix() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compat_matrix", ROOT / "compat" / "matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compat_matrix"] = module
    spec.loader.exec_module(module)
    return module


def test_audio_turns_get_the_voice_the_python_clients_stream(tmp_path: Path) -> None:
    document = {
        "turns": [
            {"at": 0.5, "say": "My name is Alice.", "mode": "text"},
            {"at": 3.0, "say": "What is my name?", "mode": "audio"},
        ]
    }
    voice_audio_turns(document, tmp_path / "run--client", seed=7)
    text, spoken = document["turns"]
    assert "audio_file" not in text
    voiced = Path(spoken["audio_file"])
    assert voiced.name == "run--client.turn1.pcm"
    assert voiced.read_bytes() == utterance("What is my name?", 7)  # speech, then the trailing silence


def result(scenario_name: str, client: str, verdicts: list[Verdict]) -> RunResult:
    return result_at(LIBRARY / f"{scenario_name}.yaml", client, verdicts)


def result_at(path: Path, client: str, verdicts: list[Verdict]) -> RunResult:
    return RunResult(load(path), ClientSpec(client, ["true"]), verdicts, 0, 1.0)


def test_the_table_shows_each_cell_and_the_checkers_reason(matrix: ModuleType) -> None:
    node = next(f for f in matrix.FRAMEWORKS if f.name == "openai-node")
    node = matrix.Framework(node.name, node.label, node.command)  # installed for the table's sake
    browser = next(f for f in matrix.FRAMEWORKS if f.name == "agents-realtime-browser")
    lost = Verdict("context_restored", False, "sess_1 began answering without the earlier facts | (name)")
    passed = Verdict("a", True)
    results = {
        ("openai-node", "drop-mid-response"): result("drop-mid-response", "openai-node", [passed]),
        ("openai-node", "close-1011"): result("close-1011", "openai-node", [passed, lost]),
    }
    text = matrix.table(results, [node, browser], 12.0, "websocket")
    row = next(line for line in text.splitlines() if line.startswith(f"| {node.label}"))
    cells = [cell.strip() for cell in row.strip("|").split(" | ")]
    header = next(line for line in text.splitlines() if line.startswith("| client"))
    columns = [cell.strip() for cell in header.strip("|").split(" | ")]
    by_column = dict(zip(columns, cells, strict=True))
    assert by_column["1006 drop"] == "PASS"
    assert by_column["close 1011"].startswith("FAIL — context_restored: the session began answering")
    assert "\\|" in by_column["close 1011"]  # a pipe in a reason does not split the markdown cell
    assert by_column["context after reconnect"] == "— (no new session)"  # these verdicts report no sessions
    assert by_column["session cap"] == "not run"
    assert (
        browser.label not in text
    )  # a WebRTC client has a table of its own: WebSocket faults miss its calls
    assert (
        "- openai-node × close 1011: `.venv/bin/rtsim run close-1011 --tls --client-ready-file --client-cmd "
        "'node compat/node/openai-sdk.mjs'`" in text
    )


def test_a_framework_not_installed_says_how_to_install_it(matrix: ModuleType) -> None:
    absent = matrix.Framework("x", "x 1.0", ("build/compat/none/bin/python", "a.py"), needs="build/none")
    assert not absent.installed
    assert "not installed (`make compat`)" in matrix.table({}, [absent], 0.0, "websocket")


def test_the_browser_row_is_a_real_webrtc_cell(matrix: ModuleType) -> None:
    browser = next(f for f in matrix.FRAMEWORKS if f.name == "agents-realtime-browser")
    assert browser.transport == "webrtc" and not browser.note
    assert browser.needs.endswith("@openai/agents-realtime/dist/bundle/openai-realtime-agents.mjs")
    assert (ROOT / browser.command[1]).exists()  # the adapter
    drop = Verdict("reconnected_within", False, "the call ended at t=2.1s and the client never called again")
    results = {
        (browser.name, "text-and-voice"): result_at(
            ROOT / "compat/scenarios/text-and-voice.yaml", browser.name, []
        ),
        (browser.name, "webrtc-sctp-abort"): result_at(
            LIBRARY / "webrtc" / "webrtc-sctp-abort.yaml", browser.name, [drop]
        ),
    }
    text = matrix.table(results, [browser], 30.0, "webrtc")
    header = next(line for line in text.splitlines() if line.startswith("| client"))
    row = next(line for line in text.splitlines() if line.startswith(f"| {browser.label}"))
    columns = [cell.strip() for cell in header.strip("|").split(" | ")]
    by_column = dict(zip(columns, [cell.strip() for cell in row.strip("|").split(" | ")], strict=True))
    assert by_column["text + voice turn"] == "PASS"
    assert by_column["SCTP abort"].startswith("FAIL — reconnected_within: the call ended")
    assert by_column["context after reconnect"] == "not run"  # its column comes from the data channel close
    assert "1006 drop" not in columns  # WebSocket faults never reach a WebRTC call
    adapter = "'.venv/bin/python compat/browser/agents_realtime_adapter.py'"
    # The built-in WebRTC scenarios are named, not pathed: `rtsim run NAME` finds them under the library.
    assert (
        "SCTP abort: `.venv/bin/rtsim run webrtc-sctp-abort --tls --client-ready-file "
        f"--client-cmd {adapter}`" in text
    )
    assert "2 cells in 30 s" in text


def test_the_readme_gets_the_table_between_its_markers(
    matrix: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{matrix.BEGIN}\nold table\n{matrix.END}\nrest\n")
    monkeypatch.setattr(matrix, "README", readme)
    matrix.write_readme("| new |\n")
    assert readme.read_text() == f"intro\n{matrix.BEGIN}\n| new |\n{matrix.END}\nrest\n"
    begin, end = matrix.markers("webrtc")
    readme.write_text(f"{matrix.BEGIN}\nws\n{matrix.END}\n{begin}\nold\n{end}\n")
    matrix.write_readme("| rtc |\n", "webrtc")  # one transport's table, the other left as it was
    assert readme.read_text() == f"{matrix.BEGIN}\nws\n{matrix.END}\n{begin}\n| rtc |\n{end}\n"


def test_the_plain_turn_scenario_has_a_text_and_a_voice_turn() -> None:
    scenario = load(ROOT / "compat" / "scenarios" / "text-and-voice.yaml")
    assert [turn.mode for turn in scenario.user] == ["text", "audio"]
    assert scenario.model_script()["transcripts"] == ["What is my name?"]


def test_context_counts_only_when_a_new_session_was_opened(matrix: ModuleType) -> None:
    restored = Verdict("context_restored", True)
    alone = result("close-1011", "x", [restored])
    assert matrix.context_text(alone) == "— (no new session)"  # nothing to restore is no pass
    two_sessions = Verdict("reconnected_within", True, figures={"sessions": 2})
    reconnected = result("close-1011", "x", [restored, two_sessions])
    assert matrix.context_text(reconnected) == "PASS"


def test_the_fault_timeline_waits_only_for_clients_that_say_they_are_loaded(matrix: ModuleType) -> None:
    """rtsim's built-in SDK client never creates RTSIM_READY_FILE: waited for, its fault timeline would start
    only once it had exited (or after 60 s), so every fault column would read 'not exercised'."""
    python = next(f for f in matrix.FRAMEWORKS if f.name == "openai-python")
    assert not python.ready_file
    assert "--client-ready-file" not in matrix.cell_command(LIBRARY / "close-1011.yaml", python)
    source = (ROOT / "clients" / "openai_sdk.py").read_text()
    assert "RTSIM_READY_FILE" not in source  # once it does, flip its ready_file
    adapters = [f for f in matrix.FRAMEWORKS if f.name != "openai-python"]
    assert all(f.ready_file for f in adapters)  # compat/*/scenario.* create the file once loaded
