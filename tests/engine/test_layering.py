"""The engine package depends only on the layers below it (protocol/schema, model/audio), never upward."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "simulator" / "engine"
# Sibling modules of `simulator/` the engine may use: the layers below it.
LOWER_LAYERS = frozenset({"audio", "dialect", "model", "protocol", "schema", "session_config", "vad"})


def _simulator_imports(path: Path) -> set[str]:
    """The `simulator` modules a file imports, by their name under `simulator/`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..x import y / from .. import x
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rtsim.simulator."):
            names.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[2] for a in node.names if a.name.startswith("rtsim.simulator."))
    return names


def test_the_engine_imports_only_the_layers_below_it() -> None:
    modules = sorted(ENGINE.glob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "session", "conversation", "turns", "responses"}
    upward = {p.name: _simulator_imports(p) - LOWER_LAYERS for p in modules}
    assert all(not names for names in upward.values()), upward
