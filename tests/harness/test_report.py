"""The HTML report as a person sees it: a known failing run opened in headless Chromium, read through the DOM.

The naive client (no reconnect logic) against drop-mid-response loses its connection mid-answer (1006) and
comes back only when the next turn is due, seconds later: the report must show two session lanes, the drop
as a shaded band where the first connection ends, the gap between them, and pins on the failed checks'
records.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtsim.scenarios.checkers import Verdict
from rtsim.scenarios.report import render_report, write_report
from rtsim.scenarios.runner import ClientSpec, RunResult, run_one
from rtsim.scenarios.screenshot import chromium_path, open_browser
from rtsim.scenarios.spec import discover, from_dict


def _need_browser() -> None:
    if chromium_path() is None:
        message = "no Chromium: apt-get install chromium (make setup does it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("playwright", reason="pip install -e '.[dev]' brings playwright")


@pytest.fixture(scope="module")
def failing_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    _need_browser()
    import asyncio

    out_dir = tmp_path_factory.mktemp("report")
    (scenario,) = discover(["drop-mid-response"])
    result = asyncio.run(run_one(scenario, ClientSpec.named("naive"), out_dir=out_dir))
    assert not result.passed, "the naive client was expected to fail drop-mid-response"
    return result, write_report([result], out_dir / "report.html")


@pytest.fixture(scope="module")
def page(failing_report: tuple[RunResult, Path]) -> Iterator[Any]:
    with open_browser(width=1200, height=1000) as browser_page:
        browser_page.goto(failing_report[1].resolve().as_uri())
        yield browser_page


def box(locator: Any) -> dict[str, float]:
    found = locator.bounding_box()
    assert found is not None, "element not rendered"
    return found


def test_each_session_is_a_lane_ending_in_its_close_code(
    page: Any, failing_report: tuple[RunResult, Path]
) -> None:
    lanes = page.locator("svg.timeline g.lane")
    assert lanes.count() == 2
    first, second = lanes.nth(0), lanes.nth(1)
    assert first.locator(".close-code").text_content() == "1006"
    assert second.locator(".close-code").text_content() == "1000"
    assert first.locator("g.conn").get_attribute("data-by") == "server"
    first_bar, second_bar = box(first.locator(".conn-bar")), box(second.locator(".conn-bar"))
    # the second connection starts seconds after the first ended, lower down: lanes, in time order
    assert second_bar["x"] > first_bar["x"] + first_bar["width"] + 50
    assert second_bar["y"] > first_bar["y"]
    # the labels a person reads are the session ids of the history
    sessions = [r["session"] for r in failing_report[0].records if r["kind"] == "session"]
    labels = page.locator("svg.timeline .lane-label").all_text_contents()
    assert all(session in labels for session in sessions)


def test_the_drop_is_a_shaded_band_where_the_first_connection_ends(page: Any) -> None:
    band = page.locator('svg.timeline g.fault[data-fault="drop"] rect.fault-region')
    assert band.count() == 1
    region = box(band)
    first_bar = box(page.locator("svg.timeline g.lane").nth(0).locator(".conn-bar"))
    bar_end = first_bar["x"] + first_bar["width"]
    assert region["x"] - 2 <= bar_end <= region["x"] + region["width"] + 2
    assert region["height"] > 3 * first_bar["height"]  # across the identity's lanes, as in a nemesis plot
    # what is on top at the band's middle, in the attempts row, is the band itself
    on_top = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).getAttribute('class')",
        [region["x"] + region["width"] / 2, region["y"] + 30],
    )
    assert on_top == "fault-region"
    # and it is painted: the pixels there are the band's orange, not the white page
    picture = page.screenshot(
        clip={"x": region["x"] + 1, "y": region["y"] + 26, "width": max(region["width"] - 2, 1), "height": 8}
    )
    red, green, blue = page.evaluate(
        """async (data) => {
            const img = new Image(); img.src = 'data:image/png;base64,' + data; await img.decode();
            const canvas = document.createElement('canvas');
            canvas.width = img.width; canvas.height = img.height;
            const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
            const px = ctx.getImageData(0, 0, img.width, img.height).data; let r = 0, g = 0, b = 0;
            for (let i = 0; i < px.length; i += 4) { r += px[i]; g += px[i + 1]; b += px[i + 2]; }
            const n = px.length / 4; return [r / n, g / n, b / n];
        }""",
        base64.b64encode(picture).decode(),
    )
    assert red > 200 and blue < 200 and red - blue > 40, (red, green, blue)


def test_the_reconnect_gap_is_marked_with_its_length(
    page: Any, failing_report: tuple[RunResult, Path]
) -> None:
    gap = page.locator("svg.timeline g.gap")
    assert gap.count() == 1
    label = gap.locator(".gap-label")
    assert label.is_visible()
    seconds = float(gap.get_attribute("data-seconds"))
    assert label.text_content() == f"gap {seconds:.2f}s"
    assert seconds > 4.0  # the naive client waits for the next turn (at 9 s) before connecting again
    figures = failing_report[0].figures
    assert abs(seconds - figures["max_reconnect_gap_s"]) < 0.05
    lanes = page.locator("svg.timeline g.lane")
    first_bar, second_bar = box(lanes.nth(0).locator(".conn-bar")), box(lanes.nth(1).locator(".conn-bar"))
    bracket = box(gap.locator(".gap-region"))
    assert abs(bracket["x"] - (first_bar["x"] + first_bar["width"])) < 2
    assert abs(bracket["x"] + bracket["width"] - second_bar["x"]) < 2


def test_turns_answers_and_failure_pins(page: Any, failing_report: tuple[RunResult, Path]) -> None:
    assert page.locator("svg.timeline g.user-turn").count() == 3  # all three turns reached the server
    assert page.locator("svg.timeline g.answer.completed").count() == 2  # the story was never finished
    assert page.locator("svg.timeline g.answer.cut").count() == 1
    failed = [v.name for v in failing_report[0].verdicts if not v.ok]
    assert "reconnected_within" in failed
    reasons = page.locator("ol.reasons > li")
    assert reasons.count() == len(failed)
    assert "reconnected_within" in reasons.nth(0).inner_text()
    # the first reason's link leads to a pin on the close record, at the first bar's end
    reasons.nth(0).locator("a").first.click()
    pin = page.locator("svg.timeline g.evidence:target")
    assert pin.get_attribute("data-checker") == "reconnected_within"
    first_bar = box(page.locator("svg.timeline g.lane").nth(0).locator(".conn-bar"))
    pin_box = box(pin.locator(".evidence-pin"))
    assert abs(pin_box["x"] + pin_box["width"] / 2 - (first_bar["x"] + first_bar["width"])) < 3
    assert "1 passed" not in page.title() and "0 passed, 1 failed" in page.title()


def test_the_page_is_self_contained(failing_report: tuple[RunResult, Path]) -> None:
    text = failing_report[1].read_text()
    for external in ("<script src", "<link", "@import", "url(http", 'src="http'):
        assert external not in text


# ---- without a browser: what the timeline derives from records ----------------------------------------


def _record(seq: int, t: float, kind: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "t": t, "wall": 1000.0 + t, "kind": kind, **fields}


def test_a_toxic_spans_until_removed_and_refusals_are_crosses() -> None:
    key = "key_x"
    records = [
        _record(0, 0.0, "server", event="start"),
        _record(1, 0.2, "handshake", conn="c1", key_id=key, accepted=True, status=101),
        _record(2, 0.2, "session", session="s1", conn="c1", key_id=key),
        _record(
            3, 2.0, "fault", fault="toxic:latency", params={"latency": 500}, key_id=key, applied_to=["s1"]
        ),
        _record(4, 5.0, "fault", fault="toxic:latency:removed", params={}, key_id=key, applied_to=["s1"]),
        _record(4, 5.5, "fault", fault="stall", params={}, key_id=key, applied_to=["s1"]),
        _record(5, 6.0, "close", session="s1", conn="c1", key_id=key, code=1011, by="server"),
        _record(
            6, 6.5, "handshake", conn="c2", key_id=key, accepted=False, status=429, reason="rate_limited"
        ),
        _record(7, 8.0, "handshake", conn="c3", key_id=key, accepted=True, status=101),
        _record(8, 8.0, "session", session="s2", conn="c3", key_id=key),
        _record(9, 10.0, "server", event="stop"),
    ]
    scenario = from_dict({"name": "synthetic", "duration": 10, "checks": ["no_leaked_sessions"]})
    verdict = Verdict("no_leaked_sessions", False, "1 session(s) still open at the end: s2")
    page = render_report(
        [RunResult(scenario, ClientSpec("custom", ["x"]), [verdict], 0, 10.0, records=records)]
    )
    assert 'data-fault="toxic:latency" data-t="2.000" data-t-end="5.000"' in page
    assert 'data-fault="stall" data-t="5.500" data-t-end="6.000"' in page  # until the session it hit ended
    assert 'data-fault="toxic:latency:removed"' not in page  # the removal ends the band, no band of its own
    assert page.count('class="attempt refused"') == 1 and page.count('class="attempt accepted"') == 2
    assert 'data-close-code="1011"' in page and 'data-close-code="open"' in page
    assert 'data-seconds="2.000"' in page  # s1 ended at 6.0, s2 began at 8.0
    assert "1 session(s) still open at the end" in page


def test_connections_closed_before_a_session_and_a_session_never_replaced_show() -> None:
    key = "key_y"
    records = [
        _record(0, 0.2, "handshake", conn="c1", key_id=key, accepted=True, status=101),
        _record(1, 0.2, "session", session="s1", conn="c1", key_id=key),
        _record(2, 2.0, "close", session="s1", conn="c1", key_id=key, code=1006, by="network"),
        _record(3, 4.0, "handshake", conn="c2", key_id=key, accepted=True, status=101),
        _record(4, 4.01, "close", session=None, conn="c2", key_id=key, code=1008, by="server"),
        _record(5, 10.0, "server", event="stop"),
    ]
    scenario = from_dict({"name": "synthetic", "duration": 10})
    page = render_report([RunResult(scenario, ClientSpec("custom", ["x"]), [], 0, 10.0, records=records)])
    assert 'class="conn sessionless" data-conn="c2"' in page and 'data-close-code="1008"' in page
    assert 'class="gap open" data-t="2.000" data-t-end="10.000"' in page
    assert "no session again (8.00s)" in page
