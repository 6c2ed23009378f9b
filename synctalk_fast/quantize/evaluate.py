"""Fidelity and speed of the candidates against ONNX Runtime fp32.

:func:`fidelity` compares frames (PSNR, max / mean level difference);
:class:`Validation` scores predictions on the validation frames (what the
tools and the search optimise); :func:`measure` runs every model on the
held-out frames (never used before) and times them with the package's one
U-Net timer (:func:`~synctalk_fast.models.timing.seconds_per_frame`,
interleaved rounds, the best round of each), giving the report's table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine, EngineOptions
from ..frames import Box
from ..models.timing import seconds_per_frame
from .data import Feeds, FrameData
from .failure import failure
from .report import BF16, FP32
from .runs import cpu_engine, predict
from .tools import Candidate

__all__ = ["fidelity", "levels", "Validation", "speeds", "open_engines", "measure"]


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def fidelity(
    reference: Sequence[np.ndarray] | np.ndarray,
    test: Sequence[np.ndarray] | np.ndarray,
    *,
    boxes: Sequence[Box] | None = None,
) -> dict[str, Any]:
    """PSNR (dB) and max / mean absolute difference in levels between uint8 images.

    Parameters
    ----------
    reference, test : sequences of np.ndarray, or np.ndarray
        uint8 images of equal shapes, pairwise (``[H, W, C]`` each, or ``[N, H, W, C]`` arrays).
    boxes : sequence of (x0, y0, x1, y1), optional, keyword-only
        Compare only these regions (one per pair), e.g. the mouth boxes.

    Returns
    -------
    dict
        ``{"psnr", "max", "mean", "pixels"}`` over all pairs together.
    """
    sq = ab = 0.0
    worst, count = 0, 0
    for j, (a, b) in enumerate(zip(reference, test)):
        if boxes is not None:
            x0, y0, x1, y1 = boxes[j]
            a, b = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
        d = np.abs(a.astype(np.int16) - b.astype(np.int16))
        sq += float(np.square(d, dtype=np.float64).sum())
        ab += float(d.sum(dtype=np.float64))
        worst = max(worst, int(d.max()) if d.size else 0)
        count += d.size
    return {"psnr": _psnr(sq / count), "max": worst, "mean": ab / count, "pixels": count}


def levels(pred: np.ndarray) -> np.ndarray:
    """U-Net predictions float32 ``[N, 3, 320, 320]`` as uint8 ``[N, 320, 320, 3]``,
    as the reference makes them (truncation, numerics §3.6)."""
    return np.ascontiguousarray((pred * 255.0).astype(np.uint8).transpose(0, 2, 3, 1))


class Validation:
    """Mouth PSNR of predictions on the validation frames against fp32's
    (``reference``, float32 ``[N, 3, 320, 320]``), on the pasted frames."""

    def __init__(self, data: FrameData, reference: np.ndarray):
        self.data = data
        self.frames = data.paste("validation", reference)
        self.boxes = data.boxes("validation")

    def psnr(self, pred: np.ndarray) -> float:
        """Mouth-box PSNR (dB) of predictions ``pred`` (float32 ``[N, 3, 320, 320]``)."""
        return float(fidelity(self.frames, self.data.paste("validation", pred), boxes=self.boxes)["psnr"])


def speeds(engines: Mapping[str, Engine], feeds: Feeds, batch: int, rounds: int = 3) -> dict[str, float]:
    """Seconds per frame of each engine over ``feeds`` in batches of
    ``batch``: the best of ``rounds`` interleaved passes, so a noisy
    neighbour slows them alike."""

    def run(engine: Engine) -> Any:
        def one_pass() -> int:
            for i in range(0, len(feeds), batch):
                engine.infer(feeds.images[i : i + batch], feeds.audio[i : i + batch])
            return len(feeds)

        return one_pass

    return seconds_per_frame({name: run(e) for name, e in engines.items()}, rounds=rounds, reduce="min")


def open_engines(
    model: str,
    fp32: Engine,
    built: Mapping[str, Candidate],
    blocks: Sequence[str],
    *,
    options: EngineOptions,
    bf16: bool,
    work: Path,
) -> tuple[dict[str, Engine], dict[str, dict]]:
    """An engine and a report row's fixed fields for every model measured:
    ONNX Runtime fp32 (``fp32``, the reference), OpenVINO bf16 of the same
    model (when ``bf16``), and each int8 candidate of ``built``."""
    engines = {FP32: fp32}
    specs: dict[str, dict] = {FP32: {"tool": None, "runtime": "onnxruntime", "precision": "fp32", "int8": False}}
    if bf16:
        with failure(model, "while opening it in OpenVINO at bf16"):
            engines[BF16] = cpu_engine(model, options, "openvino", "bf16")
        specs[BF16] = {"tool": None, "runtime": "openvino", "precision": "bf16", "int8": False}
    for name, c in built.items():
        with failure(model, f"while opening the {name} model", work):
            engines[name] = cpu_engine(c.path, options, c.runtime, c.precision)
        specs[name] = {
            "tool": c.tool,
            "runtime": c.runtime,
            "precision": c.precision,
            "int8": True,
            "method": c.method,
            "float_blocks": [b for b in blocks if b in c.float_blocks],
            "validation_psnr": c.found.validation_psnr,
        }
    return engines, specs


def measure(
    model: str,
    engines: Mapping[str, Engine],
    specs: Mapping[str, dict],
    data: FrameData,
    *,
    target_psnr: float | None,
    batch: int,
    work: Path,
) -> tuple[dict[str, dict], int]:
    """Every model of ``engines`` on the held-out frames against ``engines[FP32]``.

    Returns
    -------
    candidates : dict
        Name -> its ``specs`` row with ``seconds`` per frame, ``speedup``
        against fp32, ``mouth`` / ``frame`` / ``unet`` :func:`fidelity` and
        ``met`` (the held-out mouth PSNR reaches ``target_psnr``).
    frames : int
        Frames per timed pass (the held-out ones, or the calibration ones
        when there are fewer than two batches of held-out frames).
    """
    held = data.feeds("heldout")
    preds = {}
    for name, e in engines.items():
        with failure(model, f"while running the {name} model", work):
            preds[name] = predict(e, held, batch)
    timed = held if len(held) >= 2 * batch else data.feeds("calibration")
    with failure(model, "while timing the models", work):
        seconds = speeds(engines, timed, batch)
    f32, boxes = data.paste("heldout", preds[FP32]), data.boxes("heldout")
    candidates: dict[str, dict] = {}
    for name, spec in specs.items():
        frames = data.paste("heldout", preds[name])
        fid = {
            "mouth": fidelity(f32, frames, boxes=boxes),
            "frame": fidelity(f32, frames),
            "unet": fidelity(levels(preds[FP32]), levels(preds[name])),
        }
        candidates[name] = {
            **spec,
            "seconds": seconds[name],
            "speedup": seconds[FP32] / seconds[name],
            **fid,
            "met": target_psnr is None or fid["mouth"]["psnr"] >= target_psnr,
        }
    return candidates, len(timed)
