"""``synctalk-fast quantize``: an int8 U-Net calibrated on a template and speech, with a fidelity report.

The quantizer (onnxruntime.quantization, NNCF) is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from ..engine import EngineOptions
from ..engine.options import add_arguments
from .common import DEFAULT_ENCODER, DEFAULT_UNET, add_quiet, default_encoder

__all__ = ["add_parser", "run"]


def _names(text: str | None) -> list[str]:
    """A comma-separated list (empty parts dropped)."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def run(args: argparse.Namespace) -> int:
    """Quantize ``--model``; print the report and where it was saved."""
    from ..quantize import quantize

    if args.audio is None and args.features is None:
        raise ValueError("give --audio (with --audio-encoder) or --features")
    report = quantize(
        args.model,
        args.output,
        template=args.template,
        audio=args.audio,
        audio_encoder=default_encoder(args.audio_encoder, needed=args.features is None),
        features=args.features,
        report=args.report,
        methods=_names(args.methods),
        target_psnr=None if args.target_psnr <= 0 else args.target_psnr,
        calibration=args.calibration,
        validation=args.validation,
        heldout=args.heldout,
        keep_fp32=_names(args.keep_fp32),
        seed=args.seed,
        tool=args.tool,
        progress=None if args.quiet else print,
        options=EngineOptions.from_args(args),
    )
    print(report)
    print(f"report: {args.report or str(args.output) + '.json'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` command to ``sub``."""
    p = sub.add_parser(
        "quantize",
        help="int8 U-Net calibrated on your template and speech, with a fidelity report",
        description="Static int8 quantization (QDQ, per-channel weights) calibrated on inputs drawn from the "
        "template's frames and the speech's features. The calibration method is chosen by measurement on "
        "validation frames; blocks whose quantization hurts most stay in fp32 until --target-psnr holds. "
        "The report (printed, and saved as JSON) compares int8 with fp32 on held-out frames never used for "
        "calibration: PSNR and max/mean level difference over the mouth box and the whole frame, and the "
        "speed of both.",
    )
    p.add_argument("--model", default=DEFAULT_UNET, help=f"fp32 U-Net ONNX file (default: {DEFAULT_UNET})")
    p.add_argument("--template", required=True, help="template folder (full_body_img/, landmarks/)")
    p.add_argument("--audio", help="speech file for the audio inputs (with --audio-encoder)")
    p.add_argument("--audio-encoder", help=f"audio encoder ONNX file (default: {DEFAULT_ENCODER} if present)")
    p.add_argument("--features", help="precomputed features instead of --audio (.bin + .bin.json, .npy)")
    p.add_argument("-o", "--output", required=True, help="int8 model to write (.onnx)")
    p.add_argument("--report", help="JSON report path (default: OUTPUT.json)")
    p.add_argument(
        "--methods",
        default="MinMax,Percentile,Entropy",
        help="calibration methods to try, comma-separated (default: all three)",
    )
    p.add_argument(
        "--target-psnr",
        type=float,
        default=40.0,
        help="mouth PSNR vs fp32 to reach, in dB; 0 quantizes every block (default: 40)",
    )
    p.add_argument("--keep-fp32", help="blocks to keep in fp32 in any case, comma-separated (names as in the report)")
    p.add_argument("--calibration", type=int, default=32, help="calibration frames (default: 32)")
    p.add_argument("--validation", type=int, default=8, help="validation frames (default: 8)")
    p.add_argument("--heldout", type=int, default=32, help="held-out frames for the report (default: 32)")
    add_arguments(p, only=("threads",))
    p.add_argument("--seed", type=int, default=0, help="frame split seed (default: 0)")
    p.add_argument(
        "--tool",
        choices=("auto", "onnxruntime", "nncf"),
        default="auto",
        help="int8 by ONNX Runtime's quantizer, by NNCF (run on OpenVINO, bf16 where the CPU has it), or "
        "auto: both where openvino and nncf are installed, the fastest reaching --target-psnr on the "
        "held-out frames (default: auto); the report says which runtime and precision to run it with",
    )
    add_quiet(p, "no progress lines")
    p.set_defaults(func=run)
