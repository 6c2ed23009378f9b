"""The ``synctalk-fast`` command line: the parser, the Go ports' spellings, errors and exit codes.

One module per command group builds its sub-parsers and runs its command
(:mod:`.info`, :mod:`.models`, :mod:`.generate`, :mod:`.stream`,
:mod:`.serve`, :mod:`.loadtest`, :mod:`.batch`, :mod:`.quantize`, :mod:`.bench`); the server,
the batch pool, the quantizer and the benchmark are imported only when their
command runs, so ``synctalk-fast info`` stays light. Engine flags come from
:func:`synctalk_fast.engine.options.add_arguments` and are read back with
:meth:`~synctalk_fast.engine.EngineOptions.from_args`.

Exit status: 0 done, 1 an internal or runtime failure (one line; ``-v``
for the traceback), 2 bad input or options (one line), 130 interrupted;
``batch`` returns 1 when a job failed.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback

from .._version import __version__
from ..errors import Error
from . import batch, bench, generate, info, loadtest, models, quantize, serve, stream

__all__ = ["main", "build_parser", "go_spellings"]

# Each command's sub-parser, in the order of ``synctalk-fast --help``.
_COMMANDS = (
    info.add_parser,
    models.add_export,
    models.add_demo_models,
    generate.add_generate,
    generate.add_features,
    stream.add_parser,
    serve.add_parser,
    loadtest.add_parser,
    batch.add_parser,
    quantize.add_parser,
    generate.add_demo,
    bench.add_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``synctalk-fast`` parser (every command; ``-v`` before or after the command)."""
    parser = argparse.ArgumentParser(prog="synctalk-fast", description="Fast, exact SyncTalk_2D lip-sync inference.")
    parser.add_argument("--version", action="version", version=f"synctalk-fast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    for name, command in sub.choices.items():
        if name != "bench":  # -v after the command too; SUPPRESS keeps a -v given before it
            command.add_argument(
                "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress details"
            )
    return parser


_GO_FLAG = re.compile(r"-([a-z][a-z0-9-]+)(=.*)?", re.ASCII)


def go_spellings(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The Go ports' single-dash flags as long options.

    ``-audio x`` and ``-output=dir`` become ``--audio x`` and ``--output=dir``
    when the word is a long option of the program or of its command;
    everything else (short options, negative numbers, unknown words) is
    left as it is.

    Parameters
    ----------
    argv : list of str
        The command line after the program name.
    parser : argparse.ArgumentParser
        :func:`build_parser`'s parser.

    Returns
    -------
    list of str
        ``argv`` with the single-dash long options respelled.
    """

    def long_options(p: argparse.ArgumentParser) -> set[str]:
        return {o for o in p._option_string_actions if o.startswith("--")}

    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    command = next((a for a in argv if a in commands), None)
    known = long_options(parser) | (long_options(commands[command]) if command else set())
    out = []
    for arg in argv:
        m = _GO_FLAG.fullmatch(arg)
        out.append("-" + arg if m and "--" + m.group(1) in known else arg)
    return out


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    if "bench" not in argv:
        argv = go_spellings(argv, parser)
    if "bench" in argv and all(a in ("-v", "--verbose") for a in argv[: argv.index("bench")]):
        # the benchmark parses its own options (argparse's REMAINDER cannot pass options through)
        i = argv.index("bench")
        args = parser.parse_args(argv[:i] + ["bench"])
        args.args = argv[i + 1 :]
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        The words after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 done, 1 an internal or runtime failure (or a
        failed batch job), 2 bad input or options, 130 interrupted. Each
        failure is one line on standard error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = _parse(parser, argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (Error, ValueError, OSError) as exc:  # bad input: each carries a one-line message for the user
        print(f"synctalk-fast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synctalk-fast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an internal or runtime failure (ONNX Runtime, CUDA, ...)
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(exc).split())[:300] or type(exc).__name__
        hint = "" if args.verbose else " (run with -v for the traceback)"
        print(f"synctalk-fast: internal error: {type(exc).__name__}: {message}{hint}", file=sys.stderr)
        return 1
