"""The `rtsim` console script: one subcommand per concept, each registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes `register(subparsers)` adding its subcommand(s) with `set_defaults(func=...)`;
# `func(args) -> int` is the exit status. A module that is not present yet is skipped.
COMMAND_MODULES = (
    "rtsim.simulator.serve",
    "rtsim.simulator.demo",
    "rtsim.simulator.bench",
    "rtsim.simulator.control.commands",
    "rtsim.scenarios.command",
    "rtsim.simulator.audio_cli",
    "rtsim.simulator.toxiproxy.command",
    "rtsim.simulator.record",
    "rtsim.simulator.replay",
    "rtsim.simulator.soak",
    "rtsim.scenarios.from_trace",
    "rtsim.scenarios.explore",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtsim", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
