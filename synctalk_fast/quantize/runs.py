"""Running a candidate U-Net on the host CPU: one-session engines, batched
predictions, and whether OpenVINO runs bf16 natively here.

Every model quantization measures (the fp32 reference, OpenVINO bf16, each
int8 candidate) runs through an :class:`~synctalk_fast.engine.Engine` with
one session on the CPU, so the prepare / paste steps and the runtime
settings are those of the pipeline. Engines made here belong to the caller.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..engine import Engine, EngineOptions
from ..runtime import default_threads
from ..runtime.openvino import precision_problem
from .data import Feeds

__all__ = ["BATCH", "batch_size", "cpu_engine", "predict", "check_runs", "openvino_bf16"]

#: Frames per U-Net call when the options name no batch size.
BATCH = 4


def batch_size(options: EngineOptions) -> int:
    """Frames per U-Net call for predictions and timing: ``options.batch_size``, else :data:`BATCH`."""
    return int(options.batch_size or BATCH)


def cpu_engine(
    path: str | os.PathLike[str], options: EngineOptions, runtime: str = "onnxruntime", precision: str = "fp32"
) -> Engine:
    """A one-session engine on the host CPU for a candidate model, with
    ``options``' threads (default: all cores) and batch size."""
    return Engine(
        path,
        options=options.replace(
            runtime=runtime,
            precision=precision,
            providers=("cpu",),
            sessions=1,
            threads=options.threads or default_threads(),
        ),
    )


def predict(engine: Engine, feeds: Feeds, batch: int = BATCH) -> np.ndarray:
    """U-Net predictions of ``feeds`` in batches of ``batch``: float32 ``[N, 3, 320, 320]``."""
    return np.concatenate(
        [engine.infer(feeds.images[i : i + batch], feeds.audio[i : i + batch]) for i in range(0, len(feeds), batch)]
    )


def check_runs(path: Path, feed: dict[str, np.ndarray]) -> None:
    """Load ``path`` in a plain ONNX Runtime CPU session and run ``feed`` through it."""
    import onnxruntime as ort

    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def openvino_bf16() -> bool:
    """OpenVINO is installed and runs bf16 natively on this CPU."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return precision_problem("bf16") is None
