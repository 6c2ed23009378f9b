"""``synctalk-fast bench``: the end-to-end benchmark, which parses its own options.

The benchmark (and PyTorch, for its reference loop) is imported only when the command runs.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Run :func:`synctalk_fast.benchmark.main` on the words after ``bench``."""
    from ..benchmark import main

    return main(args.args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command to ``sub`` (its ``--help`` is the benchmark's own)."""
    p = sub.add_parser(
        "bench",
        add_help=False,  # --help goes to the benchmark's own parser
        help="benchmark: pipeline vs U-Net alone, naive ORT loop, PyTorch loop (JSON + PNG)",
        description="See `synctalk-fast bench --help`.",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)
