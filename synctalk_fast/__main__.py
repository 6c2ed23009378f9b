"""Command line entry point: ``synctalk-fast`` / ``python -m synctalk_fast``."""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    import synctalk_fast

    print(f"synctalk_fast {synctalk_fast.__version__}")
    print(f"backend: {synctalk_fast.backend()}")
    if synctalk_fast.backend() == "cpp":
        from synctalk_fast import _core

        for key, value in _core.build_info().items():
            print(f"  {key}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from synctalk_fast import __version__

    parser = argparse.ArgumentParser(prog="synctalk-fast", description="Fast, exact SyncTalk_2D lip-sync inference.")
    parser.add_argument("--version", action="version", version=f"synctalk-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="version, kernel backend and build flags").set_defaults(func=_info)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
