"""A report as a person sees it: open it in headless Chromium and take a picture.

    python -m rtsim.scenarios.screenshot runs/<stamp>/report.html docs/report.png

Uses the system's Chromium (Debian: `apt-get install chromium`) through Playwright (`pip install
playwright`, in the dev extras); no browser is downloaded. Tests use `open_browser` to query a report's
SVG through the real DOM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> str | None:
    """The system Chromium: $RTSIM_CHROMIUM, else whichever of the usual names is on PATH."""
    explicit = os.environ.get("RTSIM_CHROMIUM")
    if explicit:
        return explicit
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


@contextmanager
def open_browser(width: int = 1200, height: int = 900) -> Iterator[Any]:
    """A fresh headless Chromium (its own throwaway profile) and one page of the given viewport."""
    from playwright.sync_api import (
        sync_playwright,
    )  # a dev dependency: imported only when a browser is asked for

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(
            "no Chromium found: install it (Debian: apt-get install chromium) or set RTSIM_CHROMIUM"
        )
    with tempfile.TemporaryDirectory(prefix="rtsim-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport={"width": width, "height": height},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def screenshot(report: Path, picture: Path, *, width: int = 1200) -> Path:
    """The report's first failing run (or the page's top, if none failed) as a PNG."""
    picture.parent.mkdir(parents=True, exist_ok=True)
    with open_browser(width=width) as page:
        page.goto(report.resolve().as_uri())
        failing = page.locator('section.run[data-status="FAIL"]')
        if failing.count():
            failing.first.screenshot(path=str(picture))
        else:
            page.screenshot(path=str(picture), full_page=True)
    return picture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html written by rtsim run")
    parser.add_argument("picture", type=Path, help="where the PNG goes")
    parser.add_argument("--width", type=int, default=1200)
    args = parser.parse_args(argv)
    print(screenshot(args.report, args.picture, width=args.width))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
