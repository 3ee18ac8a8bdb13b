"""The pytest plugin as a user meets it: small suites run by `pytester`, with the plugin loaded from its
`pytest11` entry point as in any environment where rtsim is installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A test body that opens one real session on the `rtsim` simulator, as any WebSocket client would.
CONNECT = """
from websockets.sync.client import connect

def open_session(sim):
    url = sim.base_url.replace("http", "ws", 1) + "/realtime?model=gpt-realtime"
    return connect(url, additional_headers={"Authorization": f"Bearer {sim.api_key}"})
"""

# Quiet, cache-free inner runs (rtsim itself is imported by the outer session, hence no rewriting).
QUIET = (
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
    "-W",
    "ignore::pytest.PytestAssertRewriteWarning",
)


def test_importing_the_plugin_loads_no_server() -> None:
    probe = (
        "import sys, rtsim.scenarios.pytest_plugin as plugin\n"
        "loaded = [m for m in sys.modules if m.startswith(('rtsim.simulator', 'aiohttp', 'websockets'))]\n"
        "print(plugin.__name__, loaded)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "rtsim.scenarios.pytest_plugin []", done.stdout + done.stderr


def test_the_plugin_is_registered_but_idle_in_a_suite_that_does_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_plain(request):
            assert request.config.pluginmanager.has_plugin("rtsim")
            assert "rtsim.simulator.server" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=1)


def test_rtsim_fixture_takes_marker_options_and_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rtsim(max_session=3, profile="azure")
        def test_options(rtsim):
            assert rtsim.running and rtsim.base_url.startswith("http://127.0.0.1:")
            assert rtsim.config.max_session == 3 and rtsim.config.seed == 7
            assert rtsim.env["RTSIM_SEED"] == "7" and rtsim.env["OPENAI_BASE_URL"] == rtsim.base_url
            assert rtsim.env["AZURE_OPENAI_API_KEY"] == rtsim.api_key
            assert rtsim.sessions() == []
        """
    )
    pytester.runpytest(*QUIET, "--rtsim-seed", "7").assert_outcomes(passed=1)


@pytest.mark.parametrize(("scope", "distinct"), [("function", 2), ("module", 1), ("session", 1)])
def test_scope_option_shares_one_simulator(pytester: pytest.Pytester, scope: str, distinct: int) -> None:
    pytester.makepyfile(
        """
        import pytest

        SEEN = set()

        def test_one(rtsim):
            SEEN.add(rtsim.base_url)

        def test_two(rtsim):
            SEEN.add(rtsim.base_url)

        @pytest.mark.rtsim(max_session=7)
        def test_other_options_get_their_own(rtsim):
            assert rtsim.config.max_session == 7  # not the shared simulator, which has the defaults

        def test_count():
            print("distinct simulators:", len(SEEN))
        """
    )
    result = pytester.runpytest(*QUIET, "-s", f"--rtsim-scope={scope}")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([f"*distinct simulators: {distinct}*"])


def test_failing_check_reports_its_reason_and_records(pytester: pytest.Pytester, tmp_path: Path) -> None:
    record_dir = tmp_path / "histories"
    pytester.makeconftest(
        """
        FAILED = []

        def pytest_rtsim_failed(item, report, runs):
            FAILED.append((item.name, [len(run.records) > 0 for run in runs]))

        def pytest_sessionfinish(session):
            print("rtsim_failed hook:", FAILED)
        """
    )
    pytester.makepyfile(
        CONNECT
        + """
def test_drop_without_reconnect(rtsim):
    with open_session(rtsim) as ws:
        ws.recv()  # session.created
        rtsim.inject("close", code=1011, reason="for the test")
        rtsim.wait_for(kind="close", timeout=10)
    rtsim.assert_checks("reconnected_within")
"""
    )
    result = pytester.runpytest(*QUIET, "-s", f"--rtsim-record={record_dir}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: rtsim checks on http://127.0.0.1:*",
            "*reconnected_within: sess_* ended (1011 by server) at t=*s and the client never opened another*",
            '*"kind": "close"*"code": 1011*',
            "*- rtsim -*",  # the report section
        ]
    )
    assert "rtsim_failed hook: [('test_drop_without_reconnect', [True])]" in result.stdout.str()
    (history,) = record_dir.glob("*.history.jsonl")
    kinds = {json.loads(line)["kind"] for line in history.read_text().splitlines()}
    assert {"handshake", "session", "fault", "close"} <= kinds
    (report,) = record_dir.glob("*/report.html")
    assert f"HTML report: {report}" in result.stdout.str()
    page = report.read_text()
    # The timeline a person would look at: one session lane ending in its 1011, the close fault's band,
    # and the failing checker's reason.
    assert page.count('class="lane"') == 1 and 'data-close-code="1011"' in page
    assert 'class="fault' in page and "reconnected_within" in page


def test_rtsim_scenarios_marker_parametrizes_over_builtin_scenarios(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rtsim_scenarios("drop-mid-response", "close-1011")
        def test_each(rtsim_scenario):
            assert rtsim_scenario.scenario(None).name == rtsim_scenario.name
        """
    )
    result = pytester.runpytest(*QUIET, "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_each?drop-mid-response? PASSED*", "*test_each?close-1011? PASSED*"])


def test_rtsim_scenario_runs_a_file_and_explains_a_failing_verdict(pytester: pytest.Pytester) -> None:
    scenario = pytester.path / "short.yaml"
    scenario.write_text(
        textwrap.dedent(
            """
            name: short-chat
            duration: 1.5
            user:
              - {at: 0.2, say: "My name is Alice."}
            checks:
              - sessions_at_most: {n: 0}
              - no_lost_turns
            """
        )
    )
    pytester.makepyfile(
        f"""
        def test_short(rtsim_scenario):
            outcome = rtsim_scenario({str(scenario)!r}, client="reference")
            assert outcome.reasons == {{"sessions_at_most": "1 sessions where at most 0 were needed"}}
            assert [v.name for v in outcome.verdicts if v.ok] == ["no_lost_turns"]
            assert any(r["kind"] == "session" for r in outcome.records)
            outcome.assert_passed()
        """
    )
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: scenario short-chat × reference failed:*",
            "*sessions_at_most: 1 sessions where at most 0 were needed*",
            "*- rtsim -*",
        ]
    )


def test_the_distribution_registers_the_plugin_entry_point() -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "rtsim"]
    assert entry.value == "rtsim.scenarios.pytest_plugin"


def test_a_shared_simulator_reports_each_test_its_own_checks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        CONNECT
        + """
def test_first(rtsim):
    with open_session(rtsim) as ws:
        ws.recv()
        rtsim.inject("close", code=1011)
        rtsim.wait_for(kind="close", timeout=10)
    rtsim.assert_checks("reconnected_within")

def test_second(rtsim):
    assert rtsim.sessions() == ["not so"]
"""
    )
    result = pytester.runpytest(*QUIET, "--rtsim-scope=module")
    result.assert_outcomes(failed=2)
    second = [r for r in result.reprec.getreports("pytest_runtest_logreport") if r.when == "call"][1]
    (section,) = [text for title, text in second.sections if title == "rtsim"]
    assert "test_second: no checker failed; its last records:" in section
    assert "reconnected_within" not in section and '"code": 1011' in section
