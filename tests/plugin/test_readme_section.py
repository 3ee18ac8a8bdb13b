"""The README's "pytest plugin" example is a test file that passes as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def plugin_section() -> str:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## pytest plugin\n(.*?)^## ", text, re.S | re.M)
    assert section is not None, "README.md has no '## pytest plugin' section followed by another section"
    return section.group(1)


def test_the_example_test_file_passes(pytester: pytest.Pytester) -> None:
    example = re.findall(r"^```python\n(.*?)^```$", plugin_section(), re.S | re.M)[0]
    pytester.makepyfile(test_example=example)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=1)


def test_the_section_names_every_option_the_plugin_has() -> None:
    section = plugin_section()
    for name in ("--rtsim-record", "--rtsim-seed", "--rtsim-scope", "rtsim_scenarios", "pytest_rtsim_failed"):
        assert name in section, name
