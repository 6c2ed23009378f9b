"""What :func:`~synctalk_fast.quantize` measured, and the choice it makes from it.

:class:`QuantizeReport` is the result (printed by the CLI, saved as JSON);
:func:`choose_candidate` is the one rule that picks the int8 model written;
:func:`bf16_advice` says when OpenVINO bf16 without int8 beats it. Pure data
and arithmetic: nothing here runs a model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._util.atomic import write_atomic

__all__ = ["QuantizeReport", "choose_candidate", "bf16_advice", "FP32", "BF16", "INT8"]

#: Candidate names in the report: the two references, then the int8 candidates by tool.
FP32 = "onnxruntime fp32"
BF16 = "openvino bf16"
INT8 = {"onnxruntime": "onnxruntime int8", "nncf": "nncf int8"}


@dataclass
class QuantizeReport:
    """What :func:`~synctalk_fast.quantize` did and measured. ``save`` writes it as JSON.

    ``method`` ... ``sensitivity``, ``fidelity`` and ``speed["int8"]``
    describe the model written (the chosen candidate); ``candidates`` holds
    every model measured on the held-out frames, by name (``"onnxruntime
    fp32"``, the reference; ``"openvino bf16"``, the fp32 model at bf16,
    where the CPU runs it natively; ``"onnxruntime int8"``, ``"nncf int8"``):
    ``tool``, ``runtime`` and ``precision`` to run it with, ``int8``,
    ``seconds`` per frame and ``speedup`` against ONNX Runtime fp32 (same
    run), ``mouth`` / ``frame`` / ``unet`` fidelity, ``met``, and for the
    int8 ones ``method``, ``float_blocks`` and ``validation_psnr``.
    """

    model: str
    output: str
    tool: str  # the tool that wrote the output: "onnxruntime" or "nncf"
    runtime: str  # run the output with this runtime ...
    precision: str  # ... at this precision (where blocks left in floating point run)
    method: str  # calibration method kept
    methods: dict[str, float]  # method -> validation PSNR (mouth box) of the fully quantized model
    target_psnr: float | None
    met: bool  # the held-out mouth PSNR reaches the target
    fp32_blocks: list[str]  # blocks left in floating point (run at ``precision``)
    int8_blocks: list[str]
    sensitivity: dict[str, float]  # block -> validation PSNR with only that block quantized
    frames: dict[str, list[int]]  # "calibration" / "validation" / "heldout" -> template frame indices
    feature_rows: dict[str, list[int]]  # the feature row paired with each of those frames
    fidelity: dict[str, dict]  # "mouth" / "frame" / "unet" -> psnr, max, mean, pixels (held-out)
    speed: dict[str, float]  # seconds per frame of fp32 and of the output, same run
    candidates: dict[str, dict]  # every model measured (see the class docstring)
    seconds: float  # wall time of the whole quantization
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (infinite PSNRs as ``"inf"``)."""
        result: dict[str, Any] = _json_ready(asdict(self))
        return result

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON to ``path`` (atomically); returns the path."""
        return write_atomic(Path(path), (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    def __str__(self) -> str:
        f, s = self.fidelity, self.speed
        lines = [
            f"{self.output}: int8 by {'NNCF' if self.tool == 'nncf' else 'ONNX Runtime'} ({self.method} calibration), "
            f"{len(self.int8_blocks)} blocks int8, {len(self.fp32_blocks)} kept in floating point",
            f"held-out frames ({len(self.frames['heldout'])}), int8 vs fp32:",
        ]
        for region in ("mouth", "frame", "unet"):
            r = f[region]
            lines.append(f"  {region:6s} PSNR {r['psnr']:6.2f} dB, max {r['max']:3d} levels, mean {r['mean']:.3f}")
        lines.append(
            f"speed: fp32 {1000 * s['fp32']:.1f} ms/frame, int8 {1000 * s['int8']:.1f} ms/frame: "
            f"{s['speedup']:.2f} x (batch {int(s['batch'])}, {int(s['threads'])} threads)"
        )
        if self.target_psnr is not None:
            verdict = "met" if self.met else "NOT met"
            lines.append(f"target: mouth PSNR >= {self.target_psnr:g} dB on held-out frames: {verdict}")
        lines += self._table()
        lines.append(
            f"run it with: Pipeline(unet={self.output!r}, runtime={self.runtime!r}, precision={self.precision!r})"
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _table(self) -> list[str]:
        lines = [
            "candidates (held-out frames; speed on each one's runtime, same run):",
            f"    {'model':17s} {'runtime':11s} {'precision':9s} {'ms/frame':>8s} {'vs fp32':>7s} "
            f"{'mouth PSNR':>10s} {'max':>4s} {'mean':>6s} float blocks",
        ]
        written = INT8[self.tool]
        for name, c in self.candidates.items():
            m = c["mouth"]
            blocks = str(len(c["float_blocks"])) if c["int8"] else "all"
            lines.append(
                f"  {'*' if name == written else ' '} {name:17s} {c['runtime']:11s} {c['precision']:9s} "
                f"{1000 * c['seconds']:8.1f} {c['speedup']:6.2f}x {m['psnr']:7.2f} dB {m['max']:4d} "
                f"{m['mean']:6.3f} {blocks}"
            )
        return lines


def _json_ready(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _json_ready(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_ready(x) for x in v]
    return v


def choose_candidate(candidates: Mapping[str, Mapping[str, Any]], target_psnr: float | None) -> str:
    """The int8 candidate :func:`~synctalk_fast.quantize` writes.

    Parameters
    ----------
    candidates : mapping
        Name -> ``{"int8": bool, "seconds": float, "mouth": {"psnr": float, ...}, ...}``
        (:attr:`QuantizeReport.candidates`).
    target_psnr : float or None
        Held-out mouth PSNR (dB) against fp32 to reach; None: any.

    Returns
    -------
    str
        The fastest int8 candidate reaching ``target_psnr``; when none does,
        the closest to fp32 (highest mouth PSNR), the faster on a tie.

    Raises
    ------
    ValueError
        No int8 candidate among ``candidates``.
    """
    int8 = {k: c for k, c in candidates.items() if c["int8"]}
    if not int8:
        raise ValueError("no int8 candidate to choose from")
    meeting = [k for k, c in int8.items() if target_psnr is None or c["mouth"]["psnr"] >= target_psnr]
    if meeting:
        return min(meeting, key=lambda k: int8[k]["seconds"])
    return max(int8, key=lambda k: (int8[k]["mouth"]["psnr"], -int8[k]["seconds"]))


def bf16_advice(candidates: Mapping[str, Mapping[str, Any]], chosen: str, model: str) -> str | None:
    """One line when OpenVINO bf16 without int8 is both faster and closer to
    fp32 (held-out mouth PSNR) than the ``chosen`` int8 candidate; else None.

    Parameters
    ----------
    candidates : mapping
        As for :func:`choose_candidate`; the bf16 row is ``candidates["openvino bf16"]``.
    chosen : str
        The int8 candidate written.
    model : str
        The fp32 model, named in the advice.
    """
    bf, c = candidates.get(BF16), candidates[chosen]
    if bf is None or not (bf["seconds"] < c["seconds"] and bf["mouth"]["psnr"] > c["mouth"]["psnr"]):
        return None
    return (
        f"OpenVINO bf16 without int8 is both faster ({1000 * bf['seconds']:.1f} vs {1000 * c['seconds']:.1f} "
        f"ms/frame) and closer to fp32 ({bf['mouth']['psnr']:.1f} vs {c['mouth']['psnr']:.1f} dB mouth PSNR) "
        f"than the int8 model: run {model} itself with runtime='openvino', precision='bf16' instead"
    )
