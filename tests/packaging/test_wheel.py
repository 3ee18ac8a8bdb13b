"""The built wheel, installed into a fresh virtual environment as a user installs it, next to an application
that has `clients` and `scenarios` packages of its own.

One module-scoped build and install serve every case; the dependencies come from the package index
(the pip cache makes that quick after the first run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "scenarios" / "library"
# What the source tree holds that is not part of a build: local environments, caches, earlier builds.
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "runs", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def clean_env() -> dict[str, str]:
    """This environment without anything that would let the fresh venv see the repository's install."""
    hidden = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items() if k not in hidden}


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    finished = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert finished.returncode == 0, (
        f"{command} exited {finished.returncode}\n{finished.stdout}\n{finished.stderr}"
    )
    return finished


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy, so the build leaves no build/ or egg-info behind in the working tree.
    source = tmp_path_factory.mktemp("source") / "rtsim"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheelhouse")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", ".", "-w", out, cwd=source)
    (built,) = out.glob("rtsim-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its dependencies (resolved from the index, as a user gets them)."""
    home = tmp_path_factory.mktemp("venv") / "env"
    run(sys.executable, "-m", "venv", home, cwd=home.parent)
    # --no-compile: byte-compiling every dependency is most of an install's time, and import compiles lazily.
    run(home / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", wheel, cwd=home.parent)
    return home


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's application directory with its own `clients` and `scenarios` packages."""
    root = tmp_path_factory.mktemp("app")
    for package, module in (("clients", "x"), ("scenarios", "y")):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text("")
        (root / package / f"{module}.py").write_text(f"ORIGIN = 'the app: {package}.{module}'\n")
    return root


def test_the_wheel_holds_one_rtsim_namespace_and_the_scenario_library(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"rtsim", next(t for t in top_level if t.endswith(".dist-info"))}
    assert not top_level & {"simulator", "clients", "scenarios"}
    assert {"rtsim/__init__.py", "rtsim/simulator/server.py", "rtsim/simulator/api.py"} <= set(names)
    library = sorted(LIBRARY.glob("*.yaml")) + sorted(LIBRARY.glob("webrtc/*.yaml"))
    assert any(p.parent.name == "webrtc" for p in library)
    for scenario in library:
        assert f"rtsim/scenarios/library/{scenario.relative_to(LIBRARY).as_posix()}" in names
    # The browser client's page (served by the client's backend and under /_rtsim/client/).
    assert {"rtsim/clients/browser_page/index.html", "rtsim/clients/browser_page/client.js"} <= set(names)


def test_the_app_and_rtsim_packages_import_side_by_side(venv: Path, app: Path) -> None:
    code = (
        "import clients.x, scenarios.y, rtsim.simulator.server, rtsim.scenarios.runner, rtsim\n"
        "print(clients.x.ORIGIN); print(scenarios.y.ORIGIN); print(rtsim.__file__)\n"
    )
    out = run(venv / "bin" / "python", "-c", code, cwd=app).stdout.splitlines()
    assert out[:2] == ["the app: clients.x", "the app: scenarios.y"]
    assert Path(out[2]).is_relative_to(venv)  # the installed copy, not the repository's


def test_rtsim_run_list_shows_the_whole_library(venv: Path, app: Path) -> None:
    listed = {
        line.split()[0] for line in run(venv / "bin" / "rtsim", "run", "--list", cwd=app).stdout.splitlines()
    }
    library = [*LIBRARY.glob("*.yaml"), *LIBRARY.glob("webrtc/*.yaml")]
    expected = {yaml.safe_load(p.read_text())["name"] for p in library}
    assert any(name.startswith("webrtc-") for name in expected)
    assert listed == expected


def test_rtsim_run_drives_the_reference_client_from_the_app_directory(venv: Path, app: Path) -> None:
    # The reference client runs as `python -m rtsim.clients.reference` with the app's cwd: the app's own
    # `clients` package must not shadow it.
    finished = run(
        venv / "bin" / "rtsim", "run", "drop-mid-response", "--out", app / "runs", cwd=app, timeout=300
    )
    report = finished.stdout
    assert "drop-mid-response × reference: PASS" in report
    assert "1 passed, 0 failed" in report
    (history_dir,) = (app / "runs").iterdir()
    assert any(history_dir.glob("*.jsonl"))
