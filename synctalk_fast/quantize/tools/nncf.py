"""NNCF's post-training int8 quantization (OpenVINO's, its ONNX backend);
the model runs on OpenVINO, its floating-point blocks in bf16 on CPUs with
avx512_bf16 / AMX, else in fp32.

Every block is quantized once (NNCF's default MeanMinMax ranges, bias
correction off, weights kept float under their quantizers); a candidate
with blocks back in floating point is that model with their quantizers
bypassed (:func:`~..graph.float_blocks`), so such a block is exactly the
original. Candidates are scored as they will run: compiled by OpenVINO at
that precision, in memory, without its disk cache. The model written has
its weight quantizers folded into int8 initializers. NNCF and OpenVINO are
optional (the ``openvino`` extra) and imported only when used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...runtime import default_threads
from ...runtime.openvino import PRECISION_HINTS
from .. import graph
from ..data import Feeds
from ..failure import failure, reason
from ..runs import openvino_bf16
from .base import Job

__all__ = ["NncfTool", "problem"]

METHOD = "MeanMinMax"


def problem() -> str | None:
    """Why NNCF int8 cannot be tried here, or None when it can."""
    # NNCF reports usage over the network unless told it runs under CI: this
    # package sends nothing anywhere (set before NNCF's first import reads it).
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return (
            f"NNCF int8 needs the openvino and nncf packages ({exc.name or 'one'} is missing): "
            "pip install 'synctalk-fast[openvino]'"
        )
    except Exception as exc:  # an install that breaks on import
        return f"NNCF int8 needs the openvino and nncf packages, and importing them failed: {reason(exc)}"
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs INFO lines and draws progress bars on stdout."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _nncf_quantize(src: Path, cal: Feeds) -> Any:
    """Every block of ``src`` quantized by NNCF (CPU target, its default
    MeanMinMax activation ranges), calibrated on ``cal``; weights stay float
    under their quantizers (:func:`~..graph.float_blocks` needs them), and bias
    correction is off, so a block put back in floating point is exactly the
    original."""
    import nncf
    import onnx
    from nncf.onnx.quantization.backend_parameters import BackendParameters
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    params = AdvancedQuantizationParameters(
        disable_bias_correction=True, backend_params={BackendParameters.COMPRESS_WEIGHTS: False}
    )
    with _quiet():
        return nncf.quantize(
            onnx.load(str(src)),
            nncf.Dataset(range(len(cal)), cal.batch),
            subset_size=len(cal),
            target_device=nncf.TargetDevice.CPU,
            advanced_parameters=params,
        )


def _ov_predict(core: Any, model: bytes, feeds: Feeds, precision: str, threads: int) -> np.ndarray:
    """U-Net predictions of an in-memory ONNX model compiled by OpenVINO on
    the CPU at ``precision``, all ``feeds`` in one batch, no disk cache (a
    throwaway candidate): float32 ``[N, 3, 320, 320]``."""
    net = core.read_model(io.BytesIO(model))
    batch = feeds.batch(0, len(feeds))
    net.reshape({name: list(a.shape) for name, a in batch.items()})
    compiled = core.compile_model(
        net,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads,
            "ENABLE_CPU_PINNING": False,
        },
    )
    return np.array(compiled(batch)[compiled.output(0)], dtype=np.float32)


class _Calibrated:
    """NNCF's model with every block int8, and OpenVINO to score variants of it."""

    runtime = "openvino"
    method = METHOD

    def __init__(self, job: Job, every: Any, precision: str):
        import openvino as ov

        self.job, self.every, self.precision = job, every, precision
        self.core = ov.Core()
        self.threads = job.options.threads or default_threads()
        self.methods: dict[str, float] = {}

    def score(self, float_blocks: list[str], only: str | None) -> float:
        job = self.job
        back = [b for b in job.blocks if b != only] if only is not None else float_blocks
        with failure(job.model, "while running the NNCF int8 model in OpenVINO", job.work):
            pred = _ov_predict(
                self.core,
                graph.float_blocks(self.every, back).SerializeToString(),
                job.validation,
                self.precision,
                self.threads,
            )
        return job.validation_psnr(pred)

    def write(self, float_blocks: Sequence[str], path: Path) -> None:
        import onnx

        with failure(self.job.model, "while writing the NNCF int8 model", self.job.work):
            final = graph.float_blocks(self.every, float_blocks)
            graph.fold_weight_quantizers(final)
            onnx.save(final, str(path))
        self.every = None  # the written model is the last use


class NncfTool:
    """NNCF's quantizer (the :class:`~.base.Tool` interface)."""

    name = "nncf"
    label = "NNCF"
    optional = True

    def problem(self) -> str | None:
        return problem()

    def calibrate(self, job: Job) -> _Calibrated:
        precision = "bf16" if openvino_bf16() else "fp32"
        job.say(f"NNCF: calibrating ({METHOD}), candidates measured on OpenVINO at {precision} ...")
        with failure(job.model, "in NNCF's quantizer", job.work):
            every = _nncf_quantize(job.src, job.calibration)
        model = _Calibrated(job, every, precision)
        model.methods[METHOD] = model.score(list(job.keep_fp32), None)
        job.say(f"  {METHOD}: every block int8 -> validation mouth PSNR {model.methods[METHOD]:.2f} dB")
        return model
