"""The README's "Python API" examples run exactly as written, so the documentation cannot drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_api_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Python API\n(.*?)^## ", text, re.S | re.M)
    assert section is not None, "README.md has no '## Python API' section followed by another section"
    return re.findall(r"^```python\n(.*?)^```$", section.group(1), re.S | re.M)


def test_the_section_has_the_async_and_the_sync_example() -> None:
    examples = python_api_examples()
    assert len(examples) == 2
    assert "rtsim.Simulator(" in examples[0] and "rtsim.SyncSimulator(" in examples[1]


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, [r"^response completed$", r"^client saw 1006$", r"^server recorded 1006 after a drop$"]),
        (1, [r"^session\.created$", r"^session sess_\w+ of True$"]),
    ],
)
def test_example_runs_as_written(index: int, expected: list[str], tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(python_api_examples()[index], encoding="utf-8")
    # From a directory of its own: the example needs nothing but the installed package.
    finished = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert finished.returncode == 0, finished.stderr
    for pattern in expected:
        assert re.search(pattern, finished.stdout, re.M), finished.stdout
