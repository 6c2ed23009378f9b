"""``synctalk-fast info``: what this installation is (versions, backend, providers, encoders)."""

from __future__ import annotations

import argparse

from .._config import config, show_config
from .common import add_json, write_json

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Print the configuration, or write it as JSON with ``--json``."""
    if args.json:
        write_json(args.json, config())
    else:
        show_config()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` command to ``sub``."""
    p = sub.add_parser("info", help="version, kernel backend and build, ONNX Runtime providers, encoders")
    add_json(p, "the configuration")
    p.set_defaults(func=run)
