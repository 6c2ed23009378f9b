"""The H.264 encoders a video sink can use, their presets, and the checks of encoding arguments.

Pure functions and constants: :func:`encoder_problem` opens an encoder once
per process to see whether it runs here (cached, thread-safe through
``functools.lru_cache``); nothing else has state.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

import av
import av.logging
import numpy as np

from ..errors import OutputError

__all__ = ["X264_PRESETS", "DEFAULT_PRESET", "ENCODERS", "DEFAULT_ENCODER", "encoder_problem", "resolve_encoder"]

#: Default libx264 preset, chosen by measurement (README, "Encoder preset"; 720p
#: talking-head frames at CRF 20, one encoder thread): superfast costs 6.7 ms
#: of CPU per frame (veryfast 10.4, medium 23.8) at 2.4 Mbit/s (veryfast 1.55,
#: medium 1.64) and 47.1 dB PSNR (45.6, 47.8). On 2 cores every ms of encoding
#: is taken from the U-Net: with superfast the MP4 pipeline keeps up with the
#: naive loop that writes no video at all; with medium it runs at ~0.74 x the
#: U-Net's own speed. Smaller files: preset="veryfast" (or "medium").
DEFAULT_PRESET = "superfast"
#: libx264's speed presets, fastest first.
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
#: The H.264 encoders a writer can use, hardware first: "auto" takes the first
#: that opens here. libx264 is the default everywhere (the same bits on every
#: machine); NVENC exists only on NVIDIA GPUs that have the encoder block
#: (not A100 / H100 / H200).
ENCODERS = ("h264_nvenc", "libx264")
#: The encoder used unless another is asked for.
DEFAULT_ENCODER = "libx264"
# x264 speed presets -> NVENC's p1 (fastest) .. p7 (best).
_NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p2",
    "veryfast": "p3",
    "faster": "p4",
    "fast": "p4",
    "medium": "p5",
    "slow": "p6",
    "slower": "p7",
    "veryslow": "p7",
    "placebo": "p7",
}


def _check_encoding(fps: Any, crf: Any, preset: Any, encoder: Any = DEFAULT_ENCODER) -> Fraction:
    """The frame rate of ``fps``; ``ValueError`` for a bad ``fps``, ``crf``, ``preset`` or encoder name."""
    rate = _frame_rate(fps)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
    if preset not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}; got {preset!r}")
    if encoder != "auto" and encoder not in ENCODERS:
        raise ValueError(f"encoder must be 'auto' or one of {', '.join(ENCODERS)}; got {encoder!r}")
    return rate


def _frame_rate(fps: Any) -> Fraction:
    """``fps`` as a positive fraction (a float: the nearest with a denominator <= 1001)."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        try:
            value = float(fps)
        except (TypeError, ValueError):
            raise ValueError(f"fps must be a positive number, got {fps!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        rate = Fraction(value).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return rate


def _encoder_options(encoder: str, crf: int, preset: str) -> dict[str, str]:
    """The codec options of ``encoder`` for an x264-style ``crf`` and ``preset``."""
    if encoder == "h264_nvenc":
        if int(crf) == 0:
            return {"preset": _NVENC_PRESETS[preset], "tune": "lossless"}
        # constant quality: rate control vbr with no bit-rate target
        return {"preset": _NVENC_PRESETS[preset], "tune": "hq", "rc": "vbr", "cq": str(int(crf)), "b": "0"}
    return {"crf": str(int(crf)), "preset": preset}


@functools.cache
def encoder_problem(encoder: str) -> str | None:
    """Why ``encoder`` cannot encode on this machine, or None when it can.

    Opens the encoder on a small frame and encodes it (once per process):
    a hardware encoder in the build is no use without the device and
    driver behind it.

    Parameters
    ----------
    encoder : str
        One of :data:`ENCODERS`.

    Returns
    -------
    str or None
        A one-line reason, e.g. ``"not in this PyAV build"`` or FFmpeg's
        own message (no NVENC-capable device, driver missing).
    """
    try:
        cc: Any = av.CodecContext.create(encoder, "w")
    except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError / ValueError by version
        return "not in this PyAV build"
    level = av.logging.get_level()
    av.logging.set_level(
        av.logging.ERROR
    )  # FFmpeg logs the reason (e.g. "Cannot load libcuda.so.1"); the exception does not
    try:
        with av.logging.Capture(local=False) as logs:
            cc.width, cc.height, cc.pix_fmt = 256, 256, "yuv420p"
            cc.time_base, cc.framerate = Fraction(1, 25), Fraction(25)
            cc.options = _encoder_options(encoder, 20, DEFAULT_PRESET)
            cc.open()
            frame = av.VideoFrame.from_ndarray(np.zeros((384, 256), np.uint8), format="yuv420p")
            frame.pts = 0
            cc.encode(frame)
            cc.encode(None)
    except Exception as exc:  # noqa: BLE001 - any failure means this encoder cannot be used here
        reason = logs[-1][2] if logs else str(exc)
        return " ".join(reason.split()) or type(exc).__name__
    finally:
        av.logging.set_level(level)
    return None


def resolve_encoder(encoder: str = DEFAULT_ENCODER) -> str:
    """The encoder to use for ``encoder`` (``"auto"`` or a name of :data:`ENCODERS`).

    Raises
    ------
    ValueError
        An unknown name.
    OutputError
        The named encoder cannot run here (the reason, and the way out).
    """
    if encoder == "auto":
        return next(name for name in ENCODERS if name == DEFAULT_ENCODER or encoder_problem(name) is None)
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be 'auto' or one of {', '.join(ENCODERS)}; got {encoder!r}")
    problem = encoder_problem(encoder)
    if problem is not None:
        raise OutputError(
            f"encoder {encoder} cannot run here: {problem}; use encoder {DEFAULT_ENCODER!r} (--encoder {DEFAULT_ENCODER})"
        )
    return encoder
