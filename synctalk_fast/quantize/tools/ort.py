"""ONNX Runtime's static int8 quantizer (QDQ, per-channel int8 weights,
uint8 activations), calibrated by ONNX Runtime's MinMax, Percentile or
Entropy methods; the model runs on ONNX Runtime, its floating-point blocks in fp32.

Each method asked for is calibrated once (one frame per pass, so memory
stays flat; ranges cached in the work folder) and scored with every block
int8; the best on the validation frames is kept. Calibration skips tensors
whose range is undefined (empty or not floating point,
:func:`~..graph.uncalibrated_tensors`). Candidates with blocks back in
floating point are re-quantized from the cached ranges, leaving those
blocks' nodes out.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data import Feeds
from ..failure import failure
from ..graph import uncalibrated_tensors
from ..runs import batch_size, cpu_engine, predict
from .base import Job

__all__ = ["OnnxRuntimeTool", "calibrate"]


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _reader(feeds: Feeds, i: int) -> Any:
    """A calibration data reader of item ``i`` of ``feeds`` alone."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.done = False

        def get_next(self) -> dict[str, Any] | None:
            if self.done or i >= len(feeds):
                return None
            self.done = True
            return feeds.batch(i)

    return Reader()


def calibrate(src: Path, method: str, feeds: Feeds, cache: Path, work: Path) -> None:
    """Activation ranges of ``src`` from ``feeds`` by ``method``, one frame
    per pass (histogram methods keep every intermediate output of a pass in
    memory), saved to ``cache``. Tensors of :func:`~..graph.uncalibrated_tensors`
    are neither collected nor saved."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, create_calibrator, save_tensors_data

    options = {"percentile": 99.999} if method == "Percentile" else {}
    with _quiet_logging(), contextlib.redirect_stdout(io.StringIO()):  # its histogram collector prints
        cal = create_calibrator(
            src,
            _op_types(),
            augmented_model_path=str(work / f"augmented_{method}.onnx"),
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=options,
        )
        skip = uncalibrated_tensors(cal.model)
        if getattr(cal, "tensors_to_calibrate", None) is not None:  # what the histogram methods collect
            cal.tensors_to_calibrate = set(cal.tensors_to_calibrate) - skip
        for i in range(len(feeds)):
            cal.collect_data(_reader(feeds, i))
        data = cal.compute_data()
        save_tensors_data(TensorsData(data.calibration_method, {k: v for k, v in data.items() if k not in skip}), cache)
    del cal


def _quantize_file(
    src: Path,
    dst: Path,
    method: str,
    cache: Path,
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    *,
    per_channel: bool = True,
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet_logging():
        quantize_static(
            str(src),
            str(dst),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
            nodes_to_quantize=list(include or []),
            nodes_to_exclude=list(exclude),
            calibration_cache_path=str(cache),
        )


class _Calibrated:
    """The ranges of every method asked for, and the method kept."""

    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(self, job: Job):
        self.job = job
        self.methods: dict[str, float] = {}
        self.method = ""

    def _quantized(
        self, dst: Path, method: str, exclude: Sequence[str] = (), include: Sequence[str] | None = None
    ) -> None:
        job = self.job
        with failure(job.model, f"in ONNX Runtime's quantizer ({method})", job.work):
            _quantize_file(
                job.src,
                dst,
                method,
                job.work / f"{method}.json",
                exclude=exclude,
                include=include,
                per_channel=job.per_channel,
            )

    def _score(self, method: str, float_blocks: Sequence[str] = (), only: str | None = None) -> float:
        job = self.job
        dst = job.work / "candidate.onnx"
        self._quantized(dst, method, job.nodes(float_blocks), job.node_names[only] if only else None)
        with failure(job.model, f"while running the int8 model ({method} calibration)", job.work):
            engine = cpu_engine(dst, job.options)
            return job.validation_psnr(predict(engine, job.validation, batch_size(job.options)))

    def add(self, method: str) -> None:
        """Calibrate ``method`` and score it with every block int8 (but ``keep_fp32``)."""
        job = self.job
        job.say(f"ONNX Runtime: calibrating ({method}) ...")
        with failure(job.model, f"while calibrating ({method})", job.work):
            calibrate(job.src, method, job.calibration, job.work / f"{method}.json", job.work)
        self.methods[method] = self._score(method, job.keep_fp32)
        job.say(f"  {method}: every block int8 -> validation mouth PSNR {self.methods[method]:.2f} dB")
        self.method = max(self.methods, key=lambda m: self.methods[m])

    def score(self, float_blocks: list[str], only: str | None) -> float:
        return self._score(self.method, float_blocks, only)

    def write(self, float_blocks: Sequence[str], path: Path) -> None:
        self._quantized(path, self.method, self.job.nodes(float_blocks))


class OnnxRuntimeTool:
    """ONNX Runtime's quantizer (the :class:`~.base.Tool` interface)."""

    name = "onnxruntime"
    label = "ONNX Runtime"
    optional = False

    def problem(self) -> str | None:
        from onnxruntime.quantization import quantize_static

        if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
            return "int8 quantization needs a newer onnxruntime (calibration caches); pip install -U onnxruntime"
        return None

    def calibrate(self, job: Job) -> _Calibrated:
        model = _Calibrated(job)
        for method in job.methods:
            model.add(method)
        return model
