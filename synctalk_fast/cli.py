"""The ``synctalk-fast`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ._version import __version__

KINDS = {"unet": "unet", "audio-encoder": "audio_encoder"}
MODES = ("ave", "hubert", "wenet")


def _info(args: argparse.Namespace) -> int:
    import synctalk_fast

    print(f"synctalk_fast {synctalk_fast.__version__}")
    print(f"backend: {synctalk_fast.backend()}")
    if synctalk_fast.backend() == "cpp":
        from synctalk_fast import _core

        for key, value in _core.build_info().items():
            print(f"  {key}: {value}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from synctalk_fast import models

    state = models.load_state_dict(args.checkpoint)
    summary = models.export_onnx(state, args.output, kind=KINDS.get(args.kind), mode=args.mode)
    print(summary)
    return 0


def _demo_models(args: argparse.Namespace) -> int:
    from synctalk_fast import models

    out = Path(args.output)
    unet_name = "unet_328.onnx" if args.mode == "ave" else f"unet_328_{args.mode}.onnx"
    jobs = [("unet", args.mode, out / unet_name)]
    if args.mode == "ave":
        jobs.append(("audio_encoder", "ave", out / "audio_encoder.onnx"))
    for kind, mode, path in jobs:
        state = models.random_state_dict(kind, mode=mode, seed=args.seed)
        summary = models.export_onnx(state, path, kind=kind, mode=mode if kind == "unet" else None)
        print(summary)
    print(f"demo models (fixed random weights, seed {args.seed}) are in {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synctalk-fast", description="Fast, exact SyncTalk_2D lip-sync inference.")
    parser.add_argument("--version", action="version", version=f"synctalk-fast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="version, kernel backend and build flags")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "export",
        help="convert a .pth checkpoint to ONNX (no torch needed)",
        description="Convert a SyncTalk_2D .pth/.pt checkpoint (U-Net or audio encoder) to ONNX with a "
        "dynamic batch dimension. torch is not needed and no pickled code is executed.",
    )
    p.add_argument("--checkpoint", required=True, help=".pth / .pt state dict")
    p.add_argument("--kind", choices=sorted(KINDS), help="network kind (default: from the checkpoint's keys)")
    p.add_argument("--mode", choices=MODES, help="U-Net audio mode (default: from the keys; ave if ambiguous)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "demo-models",
        help="write demo ONNX models with fixed random weights",
        description="Write a U-Net and an audio encoder with fixed-seed random weights (no trained "
        "weights are needed to try the pipeline; the output is not a real face).",
    )
    p.add_argument("-o", "--output", default="models", help="folder (default: models/)")
    p.add_argument("--mode", choices=MODES, default="ave", help="U-Net audio mode (default: ave)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_demo_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # our errors are ValueErrors with a message for the user
        print(f"synctalk-fast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synctalk-fast: interrupted", file=sys.stderr)
        return 130
