"""``synctalk-fast export`` and ``demo-models``: ONNX networks from checkpoints or fixed random weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import models
from ..shapes import MODE_TABLE
from .common import add_json, write_json

__all__ = ["KINDS", "MODES", "add_export", "add_demo_models", "export", "demo_models"]

#: ``--kind`` spelling -> network kind.
KINDS = {"unet": "unet", "audio-encoder": "audio_encoder"}
#: The U-Net audio modes.
MODES = tuple(MODE_TABLE)


def export(args: argparse.Namespace) -> int:
    """Convert a ``.pth`` checkpoint to ONNX; print (or write as JSON) what was exported."""
    state = models.load_state_dict(args.checkpoint)
    summary = models.export_onnx(state, args.output, kind=KINDS.get(args.kind), mode=args.mode)
    if args.json != "-":
        print(summary)
    write_json(
        args.json,
        {
            "path": str(summary.path),
            "kind": summary.kind,
            "mode": summary.mode,
            "mode_guessed": summary.mode_guessed,
            "parameters": summary.parameters,
            "inputs": summary.inputs,
            "outputs": summary.outputs,
        },
    )
    return 0


def demo_models(args: argparse.Namespace) -> int:
    """Write a U-Net (and, for ave, an audio encoder) with fixed-seed random weights."""
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


def add_export(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command to ``sub``."""
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
    add_json(p, "what was exported")
    p.set_defaults(func=export)


def add_demo_models(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo-models`` command to ``sub``."""
    p = sub.add_parser(
        "demo-models",
        help="write demo ONNX models with fixed random weights",
        description="Write a U-Net and an audio encoder with fixed-seed random weights (no trained "
        "weights are needed to try the pipeline; the output is not a real face).",
    )
    p.add_argument("-o", "--output", default="models", help="folder (default: models/)")
    p.add_argument("--mode", choices=MODES, default="ave", help="U-Net audio mode (default: ave)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=demo_models)
