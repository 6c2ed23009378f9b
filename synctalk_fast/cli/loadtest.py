"""``synctalk-fast loadtest``: simulated conversations against a running server, measured.

The load generator (websockets, prometheus-client) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..demo import DEMO_SPEECH_SEED, synthetic_speech

__all__ = ["add_parser", "run"]


def _speech(path: str | None) -> np.ndarray:
    """Float samples at 16 kHz: the file's, or 20 s of the demo's synthetic speech."""
    return load_audio(path) if path else synthetic_speech(20.0, seed=DEMO_SPEECH_SEED)


def run(args: argparse.Namespace) -> int:
    """Run one level (``--sessions``) or a ramp, print a line per level, write JSON and chart."""
    from ..loadtest import ramp, run_load
    from ..loadtest.report import level_line, write_chart, write_json

    if args.sessions < 1 or args.seconds <= 0:
        raise ValueError("--sessions must be at least 1 and --seconds above 0")
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    load = {
        "avatar": args.avatar,
        "seconds": args.seconds,
        "speech": _speech(args.audio),
        "image_format": args.format,
        "max_lag": args.max_lag,
        "token": token,
        "remote": args.remote,
    }
    extra = {"url": args.url, "avatar": args.avatar, "format": args.format}
    if not args.ramp:
        level = run_load(args.url, sessions=args.sessions, **load)
        print(level_line(level))
        if args.json:
            print(f"wrote {write_json(level, args.json, **extra)}")
        return 0
    print(f"ramp: 1 to {args.sessions} clients, {args.seconds:g} s each level", flush=True)
    result = ramp(args.url, max_sessions=args.sessions, on_level=lambda r: print(level_line(r), flush=True), **load)
    print(f"held: {result.held} client(s) at real time (p95 delay within the model's floor + 0.1 s)")
    if args.json:
        print(f"wrote {write_json(result, args.json, **extra)}")
    if args.chart:
        print(f"wrote {write_chart(result, args.chart)}")
    return 0 if result.held else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``loadtest`` command to ``sub``."""
    p = sub.add_parser(
        "loadtest",
        help="simulated conversations against a server: frames/s, delay, faults, server memory and CPU",
        description="Open N WebSocket clients that speak real speech at real time (20 ms messages, utterances "
        "with pauses, some interrupted) to a running `synctalk-fast serve`, and measure what each gets: frames/s, "
        "each frame's delay from its audio (p50/p95/max), skipped, dropped and missing frames, ended utterances; "
        "and the server's memory and CPU from /metrics. --ramp raises N from 1 until a level no longer holds "
        "(p95 delay above the model's 0.45 s floor + 0.1 s, or a frame lost) and reports the largest that held "
        "(exit status 1 if none). Only a server on this machine unless --remote.",
    )
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--avatar", required=True, help="the avatar's name")
    p.add_argument("--sessions", type=int, default=1, help="clients at once (with --ramp: the most tried)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds each client talks (each level of a ramp)")
    p.add_argument("--audio", help="speech the utterances are cut from (default: synthetic speech)")
    p.add_argument("--ramp", action="store_true", help="1, 2, 3, ... clients until a level does not hold")
    p.add_argument("--format", choices=("jpeg", "png", "raw"), default="jpeg", help="image format asked")
    p.add_argument("--max-lag", type=float, help="asked in the start message (frames later come skipped)")
    p.add_argument("--token-file", help="file holding the server's token")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument("--chart", metavar="PNG", help="with --ramp: delay and frames/s against clients")
    p.add_argument("--remote", action="store_true", help="allow a server on another machine")
    p.set_defaults(func=run)
