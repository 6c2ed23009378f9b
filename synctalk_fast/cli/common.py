"""What several commands share: default model paths, ``--json`` records,
video encoding flags, and the engine flags given on the command line.

Nothing here imports an application (server, batch, quantization, benchmark):
every command module may import this one at no cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._util.atomic import write_atomic
from ..engine.options import OPTION_NAMES
from ..sinks import DEFAULT_ENCODER as DEFAULT_VIDEO_ENCODER
from ..sinks import DEFAULT_PRESET, ENCODERS, X264_PRESETS

__all__ = [
    "DEFAULT_UNET",
    "DEFAULT_ENCODER",
    "default_encoder",
    "given_options",
    "add_json",
    "add_quiet",
    "add_video_options",
    "write_json",
]

DEFAULT_UNET = "./models/unet_328.onnx"
DEFAULT_ENCODER = "./models/audio_encoder.onnx"


def default_encoder(given: str | None, *, needed: bool = True) -> str | None:
    """The audio encoder to use: ``given``, else :data:`DEFAULT_ENCODER` when
    ``needed`` and that file exists, else None."""
    if given is not None or not needed:
        return given
    return DEFAULT_ENCODER if Path(DEFAULT_ENCODER).is_file() else None


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine flags given on the command line, by option name (flags
    not given are absent: :func:`~synctalk_fast.engine.options.add_arguments`
    leaves them out of the namespace)."""
    return {name: getattr(args, name) for name in OPTION_NAMES if hasattr(args, name)}


def write_json(target: str | None, record: Mapping[str, Any]) -> None:
    """``--json FILE`` (``-``: standard output), written atomically; nothing without ``target``."""
    if not target:
        return
    text = json.dumps(record, indent=2, default=str) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        write_atomic(Path(target), text.encode())


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    """``--json FILE``: write ``what`` as JSON."""
    p.add_argument("--json", metavar="FILE", help=f"write {what} as JSON to FILE (- for stdout)")


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bar or summary") -> None:
    """``-q/--quiet``."""
    p.add_argument("-q", "--quiet", action="store_true", help=help)


def add_video_options(p: argparse.ArgumentParser, of: str = "") -> None:
    """H.264 encoding options of a video output (``of``: which output, in the help)."""
    p.add_argument("--crf", type=int, default=20, help=f"H.264 quality{of}, lower is better (default: 20)")
    p.add_argument(
        "--preset",
        choices=X264_PRESETS,
        default=DEFAULT_PRESET,
        metavar="PRESET",
        help=f"x264 speed preset{of} (default: {DEFAULT_PRESET})",
    )
    p.add_argument(
        "--encoder",
        choices=("auto", *ENCODERS),
        default=DEFAULT_VIDEO_ENCODER,
        help=f"H.264 encoder{of}: libx264 (CPU, all cores), h264_nvenc (NVIDIA hardware encoder), "
        f"auto (the hardware one where it runs) (default: {DEFAULT_VIDEO_ENCODER})",
    )
