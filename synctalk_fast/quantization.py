"""int8 U-Net: static quantization calibrated on the user's own template and
speech, by ONNX Runtime's or NNCF's tools, with a fidelity report.

:func:`quantize` (``synctalk_fast.quantize``) draws network
inputs from the template's frames and the speech's features (the real input
distribution), splits the frames into calibration, validation and held-out
sets, and builds one int8 candidate per tool:

- ONNX Runtime (runs on ONNX Runtime; blocks left in floating point run in
  fp32):

  1. calibrates the activation ranges with each method asked for (ONNX
     Runtime's MinMax, Percentile, Entropy; one frame at a time, so memory
     stays flat) and keeps the one whose fully quantized model is closest to
     fp32 on the validation frames;
  2. when that misses ``target_psnr`` (plus 1 dB headroom), measures the
     sensitivity of every block (quantize that block alone, measure), then
     keeps the most sensitive blocks in floating point, as few as reach it
     (binary search over the ranking);

- NNCF (OpenVINO's post-training quantization, its ONNX backend; runs on
  OpenVINO, where blocks left in floating point run in bf16 on CPUs with
  avx512_bf16 / AMX, else in fp32): quantizes every block once on the same
  calibration frames, then puts the same blocks back in floating point by
  the same accuracy-aware search, each candidate measured as it will run
  (OpenVINO at that precision, so the bf16 error counts).

Both write a QDQ ONNX model (int8 per-channel weights): either runs through
``Pipeline(unet=...)`` on either runtime; the report says which runtime and
precision it is fast on. Every candidate, ONNX Runtime fp32 (the
reference) and, where the CPU runs it natively, OpenVINO bf16 without int8
are measured on the held-out frames (never used above): PSNR and max /
mean level difference against ONNX Runtime fp32 over the mouth box and the
whole frame, and the speed of each on its runtime, in the same run, the
runs interleaved. The output is the fastest int8 candidate that reaches
``target_psnr`` there (:func:`choose_candidate`); the report lists them all
and says so when OpenVINO bf16 alone is both faster and closer.

Per-channel weights need ``DequantizeLinear``'s ``axis`` (opset 13): a model
of a lower default-domain opset (``torch.onnx.export`` at opset 11, as
SyncTalk_2D's own export writes) is converted to opset 13 in memory first, and
the conversion is checked by running one frame against the original; when
it fails, weights are quantized per tensor instead (a report note and a log
warning say so). Any failure of the ONNX / ONNX Runtime / NNCF / OpenVINO
tooling is raised as a one-line :class:`~synctalk_fast.errors.ModelError`
naming the model.

The held-out and speed runs go through an :class:`~synctalk_fast.engine.Engine`
(the U-Net step's prepare and paste included); the search's throwaway NNCF
candidates are compiled by OpenVINO without its disk cache. It drives the
engine, so it lives above it, beside :mod:`~synctalk_fast.pipeline`. NNCF
and OpenVINO are optional (the ``openvino`` extra) and imported only when
used.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ._util.atomic import atomic_path, write_atomic
from .engine import Engine, StepBatch
from .errors import FeatureError, ModelError, TemplateError
from .features import feature_windows, load_features
from .runtime import default_threads
from .runtime.openvino import PRECISION_HINTS, precision_problem
from .shapes import MODES
from .template import Template

__all__ = ["quantize", "QuantizeReport", "name_blocks", "fidelity", "choose_candidate", "METHODS", "TOOLS"]

log = logging.getLogger(__name__)

METHODS = ("MinMax", "Percentile", "Entropy")
#: ``quantize(tool=...)``: "auto" tries every tool installed and keeps the best candidate.
TOOLS = ("auto", "onnxruntime", "nncf")
_BATCH = 4
_PER_CHANNEL_OPSET = 13  # DequantizeLinear's axis attribute (per-channel weights) appears in opset 13
_CONVERSION_TOLERANCE = 1e-3  # max |difference| of the converted model's output (0..1) against the original
# The search aims this far above target_psnr on the validation frames: a few
# frames misjudge the PSNR over the whole template (the face U-Net, NNCF, 3
# blocks in bf16: 40.7 dB on 8 validation frames, 40.2 dB on 247 other
# frames, 39.7 dB on the 32 held-out ones; one more block: 41.5 dB on the 247).
_HEADROOM = 1.0


# --- blocks -------------------------------------------------------------------------


def _block_of(weight: str) -> str | None:
    """The network block a weight belongs to, from its state-dict name: an
    inverted-residual block (``down3...double_conv.1``), an audio layer
    (``audio_model.conv4``), ``inc`` or ``outc``; None for other names."""
    parts = re.sub(r"_\d+$", "", weight).split(".")
    if parts[0] in ("inc", "outc"):
        return parts[0]
    if parts[0] == "audio_model" and len(parts) > 1:
        return ".".join(parts[:2])
    if "double_conv" in parts:
        i = parts.index("double_conv")
        return ".".join(parts[: i + 2])
    return None


def name_blocks(model) -> list[str]:
    """Name every node of a U-Net graph ``"<block>/<op>_<k>"`` and return the
    blocks in graph order.

    A convolution's block comes from its weight's name (the state-dict keys
    of numerics §5, as :func:`~synctalk_fast.models.export_onnx` writes them);
    with other names, every three convolutions make a block (an inverted
    residual). Nodes without weights join the block of their first input.
    The model is changed in place.
    """
    inits = {t.name for t in model.graph.initializer}
    producer: dict[str, str] = {}
    blocks: list[str] = []
    convs = 0
    for k, node in enumerate(model.graph.node):
        weights = [x for x in node.input if x in inits]
        if node.op_type == "Conv" and weights:
            block = _block_of(weights[0]) or f"conv{convs // 3:02d}"
            convs += 1
        else:
            block = next((producer[x] for x in node.input if x in producer), "input")
        node.name = f"{block}/{node.op_type}_{k}"
        for out in node.output:
            producer[out] = block
        if block not in blocks:
            blocks.append(block)
    return blocks


# --- metrics ------------------------------------------------------------------------


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def fidelity(reference: Sequence[np.ndarray], test: Sequence[np.ndarray], *, boxes: Sequence | None = None) -> dict:
    """PSNR (dB) and max / mean absolute difference in levels between uint8 images.

    Parameters
    ----------
    reference, test : sequences of np.ndarray
        uint8 images of equal shapes, pairwise.
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


# --- report -------------------------------------------------------------------------


#: Candidate names in the report: the two references, then the int8 candidates by tool.
FP32 = "onnxruntime fp32"
BF16 = "openvino bf16"
_INT8 = {"onnxruntime": "onnxruntime int8", "nncf": "nncf int8"}


@dataclass
class QuantizeReport:
    """What :func:`quantize` did and measured. ``save`` writes it as JSON.

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

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return clean(asdict(self))

    def save(self, path: str | os.PathLike) -> Path:
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
        lines.append(f"speed: fp32 {1000 * s['fp32']:.1f} ms/frame, int8 {1000 * s['int8']:.1f} ms/frame: "
                     f"{s['speedup']:.2f} x (batch {int(s['batch'])}, {int(s['threads'])} threads)")
        if self.target_psnr is not None:
            verdict = "met" if self.met else "NOT met"
            lines.append(f"target: mouth PSNR >= {self.target_psnr:g} dB on held-out frames: {verdict}")
        lines.append("candidates (held-out frames; speed on each one's runtime, same run):")
        lines.append(f"    {'model':17s} {'runtime':11s} {'precision':9s} {'ms/frame':>8s} {'vs fp32':>7s} "
                     f"{'mouth PSNR':>10s} {'max':>4s} {'mean':>6s} float blocks")
        written = _INT8[self.tool]
        for name, c in self.candidates.items():
            m = c["mouth"]
            blocks = str(len(c["float_blocks"])) if c["int8"] else "all"
            lines.append(f"  {'*' if name == written else ' '} {name:17s} {c['runtime']:11s} {c['precision']:9s} "
                         f"{1000 * c['seconds']:8.1f} {c['speedup']:6.2f}x {m['psnr']:7.2f} dB {m['max']:4d} "
                         f"{m['mean']:6.3f} {blocks}")
        lines.append(f"run it with: Pipeline(unet={self.output!r}, runtime={self.runtime!r}, "
                     f"precision={self.precision!r})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def choose_candidate(candidates: Mapping[str, Mapping], target_psnr: float | None) -> str:
    """The int8 candidate :func:`quantize` writes.

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
    """
    int8 = {k: c for k, c in candidates.items() if c["int8"]}
    if not int8:
        raise ValueError("no int8 candidate to choose from")
    meeting = [k for k, c in int8.items() if target_psnr is None or c["mouth"]["psnr"] >= target_psnr]
    if meeting:
        return min(meeting, key=lambda k: int8[k]["seconds"])
    return max(int8, key=lambda k: (int8[k]["mouth"]["psnr"], -int8[k]["seconds"]))


def bf16_advice(candidates: Mapping[str, Mapping], chosen: str, model: str) -> str | None:
    """One line when OpenVINO bf16 without int8 is both faster and closer to
    fp32 (held-out mouth PSNR) than the ``chosen`` int8 candidate; else None."""
    bf, c = candidates.get(BF16), candidates[chosen]
    if bf is None or not (bf["seconds"] < c["seconds"] and bf["mouth"]["psnr"] > c["mouth"]["psnr"]):
        return None
    return (f"OpenVINO bf16 without int8 is both faster ({1000 * bf['seconds']:.1f} vs {1000 * c['seconds']:.1f} "
            f"ms/frame) and closer to fp32 ({bf['mouth']['psnr']:.1f} vs {c['mouth']['psnr']:.1f} dB mouth PSNR) "
            f"than the int8 model: run {model} itself with runtime='openvino', precision='bf16' instead")


# --- ONNX Runtime glue ----------------------------------------------------------------


@contextlib.contextmanager
def _quiet_ort_logging():
    """ONNX Runtime's quantization tools log advice through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _reason(exc: BaseException, work: Path | None = None) -> str:
    """``exc`` as one line of at most 300 characters, the temporary folder's prefix dropped."""
    text = str(exc)
    if work is not None:
        text = text.replace(str(work) + os.sep, "")
    text = " ".join(text.split()) or type(exc).__name__
    if not isinstance(exc, ModelError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def _failure(model, doing: str, work: Path | None = None):
    """Failures of the ONNX / ONNX Runtime tools inside the block become a
    one-line :class:`ModelError` naming ``model``; ``OSError`` (disk, files)
    and ``MemoryError`` pass unchanged."""
    try:
        yield
    except (OSError, MemoryError):
        raise
    except Exception as exc:
        raise ModelError(f"{model}: int8 quantization failed {doing}: {_reason(exc, work)}") from exc


def _default_opset(model) -> int | None:
    """The default-domain (``""`` / ``"ai.onnx"``) opset of an ONNX model; None without one."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _to_opset(model, version: int):
    """``model`` converted to opset ``version`` (default domain) and checked with ONNX's checker."""
    import onnx
    from onnx import version_converter

    converted = version_converter.convert_version(model, version)
    onnx.checker.check_model(converted)
    return converted


def _check_runs(path: Path, feed: dict[str, np.ndarray]) -> None:
    """Load ``path`` in a plain ONNX Runtime CPU session and run ``feed`` through it."""
    import onnxruntime as ort

    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _cpu_engine(path, threads: int | None, runtime: str = "onnxruntime", precision: str = "fp32") -> Engine:
    """A one-session engine on the host CPU for a candidate model."""
    return Engine(path, runtime=runtime, precision=precision, providers=["cpu"], sessions=1,
                  threads=threads or default_threads())


class _Feeds:
    """Batches of the U-Net's two inputs, by graph input name."""

    def __init__(self, names: dict[str, str], images: np.ndarray, audio: np.ndarray):
        self.names, self.images, self.audio = names, images, audio

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, i: int, n: int = 1) -> dict[str, np.ndarray]:
        return {self.names["image"]: self.images[i : i + n], self.names["audio"]: self.audio[i : i + n]}

    def reader(self, i: int, n: int = 1):
        from onnxruntime.quantization import CalibrationDataReader

        feeds = self

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.k = i

            def get_next(self):
                if self.k >= min(i + n, len(feeds)):
                    return None
                self.k += 1
                return feeds.batch(self.k - 1)

        return Reader()


def _run(engine: Engine, feeds: _Feeds) -> np.ndarray:
    """U-Net predictions, float32 [N, 3, 320, 320]."""
    return np.concatenate([engine.infer(feeds.images[i : i + _BATCH], feeds.audio[i : i + _BATCH])
                           for i in range(0, len(feeds), _BATCH)])


def _levels(pred: np.ndarray) -> np.ndarray:
    """uint8 [N, 320, 320, 3] as the reference makes them (truncation, numerics §3.6)."""
    return np.ascontiguousarray((pred * 255.0).astype(np.uint8).transpose(0, 2, 3, 1))


def _op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _calibrate(src: Path, method: str, feeds: _Feeds, cache: Path, work: Path) -> None:
    """Activation ranges from ``feeds``, one frame per pass (histogram methods
    keep every intermediate output of a pass in memory), saved to ``cache``."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    options = {"percentile": 99.999} if method == "Percentile" else {}
    with _quiet_ort_logging(), contextlib.redirect_stdout(io.StringIO()):  # its histogram collector prints
        cal = create_calibrator(src, _op_types(), augmented_model_path=str(work / f"augmented_{method}.onnx"),
                                calibrate_method=getattr(CalibrationMethod, method), extra_options=options)
        for i in range(len(feeds)):
            cal.collect_data(feeds.reader(i))
        save_tensors_data(cal.compute_data(), cache)
    del cal


def _quantize_file(src: Path, dst: Path, method: str, cache: Path, exclude: Sequence[str] = (),
                   include: Sequence[str] | None = None, *, per_channel: bool = True) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet_ort_logging():
        quantize_static(str(src), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method), nodes_to_quantize=list(include or []),
                        nodes_to_exclude=list(exclude), calibration_cache_path=str(cache))


# --- NNCF / OpenVINO glue ---------------------------------------------------------------

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _nncf_problem() -> str | None:
    """Why NNCF int8 cannot be tried here, or None when it can."""
    # NNCF reports usage over the network unless told it runs under CI: this
    # package sends nothing anywhere (set before NNCF's first import reads it).
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return (f"NNCF int8 needs the openvino and nncf packages ({exc.name or 'one'} is missing): "
                "pip install 'synctalk-fast[openvino]'")
    except Exception as exc:  # an install that breaks on import
        return f"NNCF int8 needs the openvino and nncf packages, and importing them failed: {_reason(exc)}"
    return None


def _openvino_bf16() -> bool:
    """OpenVINO is installed and runs bf16 natively on this CPU."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return precision_problem("bf16") is None


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs INFO lines and draws progress bars on stdout."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _prune(graph) -> None:
    """Drop quantize / dequantize nodes nothing reads, then initializers nothing reads."""
    while True:
        read = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in _QDQ and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _float_blocks(model, blocks: Sequence[str]):
    """A copy of the QDQ model ``model`` with ``blocks`` (names of
    :func:`name_blocks`) back in floating point: every input of their nodes
    that passes through QuantizeLinear -> DequantizeLinear (activations and
    weights) reads the float tensor instead. Weights must still be float
    initializers under their QuantizeLinear (NNCF without weight
    compression); quantizers other consumers read stay."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    chosen = set(blocks)
    if not chosen:
        return out
    made = {o: n for n in out.graph.node for o in n.output}
    for node in out.graph.node:
        if node.op_type in _QDQ or node.name.split("/")[0] not in chosen:
            continue
        for i, x in enumerate(node.input):
            dq = made.get(x)
            q = made.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    _prune(out.graph)
    return out


def _fold_weight_quantizers(model) -> None:
    """Replace every QuantizeLinear of an initializer (a weight) by its
    result, an int8 initializer read by the DequantizeLinear: a quarter of
    the size, the same model (ONNX's QuantizeLinear: round half to even,
    saturate). In place."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = (numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2]
                else np.zeros(scale.shape, np.uint8))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % max(x.ndim, 1)
        shape = [1] * x.ndim
        if scale.ndim:
            shape[axis] = -1
        y = np.rint(x / scale.reshape(shape)) + zero.reshape(shape).astype(np.float32)
        info = np.iinfo(zero.dtype)
        graph.initializer.append(numpy_helper.from_array(np.clip(y, info.min, info.max).astype(zero.dtype),
                                                         node.output[0]))
        graph.node.remove(node)
    _prune(graph)


def _nncf_quantize(src: Path, cal: _Feeds):
    """Every block of ``src`` quantized by NNCF (CPU target, its default
    MeanMinMax activation ranges), calibrated on ``cal``; weights stay float
    under their quantizers (:func:`_float_blocks` needs them), and bias
    correction is off, so a block put back in floating point is exactly the
    original."""
    import nncf
    import onnx
    from nncf.onnx.quantization.backend_parameters import BackendParameters
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    params = AdvancedQuantizationParameters(disable_bias_correction=True,
                                            backend_params={BackendParameters.COMPRESS_WEIGHTS: False})
    with _quiet_nncf():
        return nncf.quantize(onnx.load(str(src)), nncf.Dataset(range(len(cal)), cal.batch), subset_size=len(cal),
                             target_device=nncf.TargetDevice.CPU, advanced_parameters=params)


def _ov_predict(core, model: bytes, feeds: _Feeds, precision: str, threads: int) -> np.ndarray:
    """U-Net predictions of an in-memory ONNX model compiled by OpenVINO on
    the CPU at ``precision``, all ``feeds`` in one batch, no disk cache (a
    throwaway candidate)."""
    net = core.read_model(io.BytesIO(model))
    batch = feeds.batch(0, len(feeds))
    net.reshape({name: list(a.shape) for name, a in batch.items()})
    compiled = core.compile_model(net, "CPU", {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
                                               "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                               "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False})
    return np.array(compiled(batch)[compiled.output(0)], dtype=np.float32)


def search_fp32_blocks(ranking: Sequence[str], score: Callable[[list[str]], float], target: float) -> tuple[list[str], float]:
    """The fewest most-sensitive blocks to keep in fp32 for ``score >= target``.

    ``ranking``: blocks, most sensitive first; ``score(fp32_blocks)``: the
    fidelity of the model with those blocks in fp32. Binary search on the
    number kept (fidelity grows with it, up to noise); returns the blocks
    and their score. Keeping every block (no int8 left) is the last resort.
    """
    lo, hi = 0, len(ranking)  # score(ranking[:hi]) >= target is assumed (all fp32)
    scores: dict[int, float] = {}
    while lo < hi:
        mid = (lo + hi) // 2
        scores[mid] = score(list(ranking[:mid]))
        if scores[mid] >= target:
            hi = mid
        else:
            lo = mid + 1
    if lo not in scores:
        scores[lo] = score(list(ranking[:lo])) if lo < len(ranking) else math.inf
    return list(ranking[:lo]), scores[lo]


# --- the command ----------------------------------------------------------------------


def _split(n: int, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint random frame sets; scaled down (each >= 1) for a short template."""
    want = sum(sizes.values())
    if n < len(sizes):
        raise TemplateError(f"quantization needs at least {len(sizes)} template frames, the template has {n}")
    if want > n:
        scaled = {k: max(1, int(v * n / want)) for k, v in sizes.items()}
        while sum(scaled.values()) > n:
            big = max(scaled, key=scaled.get)
            scaled[big] -= 1
        sizes = scaled
    perm = rng.permutation(n)
    out, at = {}, 0
    for name, size in sizes.items():
        out[name] = np.sort(perm[at : at + size])
        at += size
    return out


def _features(features, audio, audio_encoder, mode: str, threads: int | None) -> tuple[np.ndarray, bool]:
    if features is not None:
        return load_features(features, mode=mode)
    if audio is None:
        raise FeatureError("quantize needs the speech's features: audio=... with audio_encoder=..., or features=...")
    if mode != "ave":
        raise FeatureError(f"{mode} models take precomputed features (features=...), not audio")
    if audio_encoder is None:
        raise FeatureError("computing features from audio needs audio_encoder=...; or pass features=...")
    encoder = Engine(audio_encoder=audio_encoder, providers=["cpu"], threads=threads)
    return encoder.audio_features(audio), False


def _timed(engines: Mapping[str, Engine], feeds: _Feeds, rounds: int = 3) -> dict[str, float]:
    """Seconds per frame of each engine, the best of ``rounds`` passes over
    ``feeds`` in batches; the engines take turns within each round, so a
    noisy neighbour slows them alike."""
    for engine in engines.values():
        engine.infer(feeds.images[:_BATCH], feeds.audio[:_BATCH])
    best = dict.fromkeys(engines, math.inf)
    for _ in range(rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            for i in range(0, len(feeds), _BATCH):
                engine.infer(feeds.images[i : i + _BATCH], feeds.audio[i : i + _BATCH])
            best[name] = min(best[name], (time.perf_counter() - t0) / len(feeds))
    return best


def _tools(tool: str, notes: list[str]) -> list[str]:
    """The tools to run for ``tool``; a note when "auto" has to leave NNCF out."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; expected one of {', '.join(TOOLS)}")
    if tool == "onnxruntime":
        return ["onnxruntime"]
    problem = _nncf_problem()
    if tool == "nncf":
        if problem:
            raise ValueError(problem)
        return ["nncf"]
    if problem:
        notes.append(f"only ONNX Runtime's int8 was tried: {problem}")
        return ["onnxruntime"]
    return ["onnxruntime", "nncf"]


def quantize(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    template,
    audio=None,
    audio_encoder=None,
    features=None,
    report: str | os.PathLike | None = None,
    tool: str = "auto",
    methods: Sequence[str] = METHODS,
    target_psnr: float | None = 40.0,
    calibration: int = 32,
    validation: int = 8,
    heldout: int = 32,
    keep_fp32: Sequence[str] = (),
    threads: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> QuantizeReport:
    """Quantize a U-Net to int8, calibrated on the user's template and speech.

    Parameters
    ----------
    model : str or os.PathLike
        fp32 U-Net ONNX file (any exporter; see :func:`~synctalk_fast.models.load_session`).
        Per-channel int8 weights need opset 13: a model of a lower opset
        (e.g. ``torch.onnx.export(..., opset_version=11)``, what SyncTalk_2D
        and the Go ports' export scripts write) is converted to opset 13 in
        memory, and the conversion checked on one frame against the
        original. If that fails, the weights are quantized per tensor
        instead (less faithful), with a log warning and a note in the
        report. ``model`` itself is never changed.
    output : str or os.PathLike
        Where to write the int8 model (QDQ ONNX, the opset of ``model`` or
        13 after a conversion). ``Pipeline(unet=output)`` runs it on either
        runtime; it is fast on the runtime and precision the report names
        (:attr:`QuantizeReport.runtime`, :attr:`QuantizeReport.precision`).
        It appears at once, complete, after it has loaded and run in ONNX
        Runtime; a failure before then leaves ``output`` as it was, and no
        file beside it.
    template : Template, str or os.PathLike, keyword-only
        The person's template: its frames are the image inputs.
    audio, audio_encoder : keyword-only
        Speech (file or 16 kHz samples) and the ave encoder, for the audio
        inputs; or ``features`` (file or array, any mode) instead.
    report : str or os.PathLike, optional, keyword-only
        JSON report path (default: ``output`` with ``.json`` added).
    tool : {"auto", "onnxruntime", "nncf"}, keyword-only
        Who quantizes. ``"onnxruntime"``: ONNX Runtime's tools, the model
        runs on ONNX Runtime. ``"nncf"``: NNCF (the ``openvino`` extra), the
        model runs on OpenVINO, its floating-point blocks at bf16 where the
        CPU has avx512_bf16 / AMX, else fp32. ``"auto"``: both when NNCF and
        OpenVINO are installed (else ONNX Runtime's, with a note), and the
        fastest candidate reaching ``target_psnr`` on the held-out frames
        is written (:func:`choose_candidate`).
    methods : sequence of {"MinMax", "Percentile", "Entropy"}, keyword-only
        ONNX Runtime's calibration methods to try; the best on the
        validation frames is kept. (NNCF's candidate uses its own default,
        MeanMinMax.)
    target_psnr : float or None, keyword-only
        Mouth-box PSNR (dB) against fp32 to reach on the held-out frames.
        Each candidate's most sensitive blocks stay in floating point until
        its validation PSNR is 1 dB above it (headroom: a few validation
        frames misjudge the PSNR over the template by about that much). None
        quantizes every block.
    calibration, validation, heldout : int, keyword-only
        Template frames for calibration, for choosing the method and the
        floating-point blocks, and for the report and the choice between
        candidates (disjoint; scaled down for a short template).
    keep_fp32 : sequence of str, keyword-only
        Blocks (names as in the report) kept in floating point in any case.
    threads : int, optional, keyword-only
        Threads of every runtime (default: all cores).
    seed : int, keyword-only
        Seed of the frame split and the frame / feature pairing.
    progress : callable, optional, keyword-only
        Called with a line of text at each step.

    Returns
    -------
    QuantizeReport
        Also written to ``report``.

    Raises
    ------
    ModelError
        ``model`` is not a usable U-Net, or the quantization tools (ONNX,
        ONNX Runtime, NNCF, OpenVINO) failed on it (reading, calibrating,
        quantizing, running an int8 model): one line naming ``model`` and
        the reason.
    TemplateError, FeatureError
        The template or the speech's features cannot be used.
    ValueError
        Unknown tool, calibration method or ``keep_fp32`` block; ``tool="nncf"``
        without NNCF or OpenVINO installed.
    OSError
        Files cannot be read or written (disk full, permissions).
    """
    import onnx

    t_start = time.perf_counter()
    say = progress or (lambda line: log.info("%s", line))
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown calibration method {m!r}; expected some of {', '.join(METHODS)}")
    if not methods:
        raise ValueError("give at least one calibration method")
    notes: list[str] = []
    tools = _tools(tool, notes)
    if "onnxruntime" in tools:
        from onnxruntime.quantization import quantize_static

        if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
            raise ModelError("int8 quantization needs a newer onnxruntime (calibration caches); "
                             "pip install -U onnxruntime")
    try:
        engine = _cpu_engine(model, threads)
    except ModelError as exc:
        if "is an audio encoder" in str(exc):
            raise ModelError(f"{model}: is an audio encoder; quantize takes a U-Net") from None
        raise
    fp32 = engine.unet
    n_threads = threads or default_threads()
    bf16 = _openvino_bf16()
    ov_precision = "bf16" if bf16 else "fp32"  # where NNCF's floating-point blocks run
    tpl = template if isinstance(template, Template) else Template(template)
    rows, windowed = _features(features, audio, audio_encoder, fp32.mode, threads)

    rng = np.random.default_rng(seed)
    sets = _split(len(tpl), {"heldout": heldout, "calibration": calibration, "validation": validation}, rng)
    pairing = {k: rng.integers(0, rows.shape[0], len(v)) for k, v in sets.items()}

    prepared: dict[str, StepBatch] = {}

    def feeds_for(name: str) -> _Feeds:
        rws = pairing[name]
        audio_in = np.concatenate([rows[r : r + 1].reshape(1, *MODES[fp32.mode]) if windowed else
                                   feature_windows(rows, mode=fp32.mode, start=int(r), stop=int(r) + 1) for r in rws])
        prepared[name] = engine.prepare([(tpl, int(k)) for k in sets[name]], audio_in)
        return _Feeds(fp32.inputs, prepared[name].images, prepared[name].audio)

    def pasted(name: str, preds: np.ndarray) -> list[np.ndarray]:
        batch = prepared[name]
        return list(engine.paste(StepBatch(batch.frames, batch.images, batch.audio, preds)))

    say(f"frames: {len(sets['calibration'])} calibration, {len(sets['validation'])} validation, "
        f"{len(sets['heldout'])} held out (of {len(tpl)})")
    cal, val = feeds_for("calibration"), feeds_for("validation")
    val_boxes = [tpl.box(int(k)) for k in sets["validation"]]
    ref_val_pred = _run(engine, val)
    ref_val_frames = pasted("validation", ref_val_pred)

    def val_psnr(pred: np.ndarray) -> float:
        return fidelity(ref_val_frames, pasted("validation", pred), boxes=val_boxes)["psnr"]

    with tempfile.TemporaryDirectory(prefix="synctalk-quant-") as tmp:
        work = Path(tmp)
        # Every file written below lives in ``work`` (deleted on exit, on error too), except
        # the output, which only appears at ``output`` complete (atomic_path).
        src = work / "named.onnx"

        with _failure(model, "while reading the model", work):
            named = onnx.load(str(fp32.model_path))
        opset = _default_opset(named)
        per_channel = opset is None or opset >= _PER_CHANNEL_OPSET
        if not per_channel:
            say(f"converting the model from opset {opset} to {_PER_CHANNEL_OPSET} (per-channel int8 weights) ...")
            try:
                converted = _to_opset(named, _PER_CHANNEL_OPSET)
                onnx.save(converted, str(src))  # replaced by the named model below
                one = _Feeds(val.names, val.images[:1], val.audio[:1])
                diff = float(np.abs(_run(_cpu_engine(src, threads), one) - ref_val_pred[:1]).max())
                if not diff <= _CONVERSION_TOLERANCE:
                    raise ValueError(f"the converted model's output differs from the original's by {diff:.3g}")
            except (OSError, MemoryError):
                raise
            except Exception as exc:
                why = _reason(exc, work)
                log.warning("%s: opset %d could not be converted to %d (%s); quantizing weights per tensor, "
                            "which loses fidelity", model, opset, _PER_CHANNEL_OPSET, why)
                notes.append(f"opset {opset} could not be converted to {_PER_CHANNEL_OPSET} ({why}): weights "
                             f"quantized per tensor (export at opset >= {_PER_CHANNEL_OPSET} for per-channel weights)")
            else:
                named, per_channel = converted, True
                notes.append(f"opset {opset} converted to {_PER_CHANNEL_OPSET} for per-channel int8 weights")
        with _failure(model, "while preparing the model", work):
            blocks = name_blocks(named)
            onnx.save(named, str(src))
        node_names = {b: [n.name for n in named.graph.node if n.name.startswith(b + "/")] for b in blocks}
        del named
        unknown = sorted(set(keep_fp32) - set(blocks))
        if unknown:
            raise ValueError(f"keep_fp32: no block {unknown[0]!r}; blocks are {', '.join(blocks)}")

        def search(label: str, full: float, score: Callable[[list[str], str | None], float]) -> tuple[list[str], dict]:
            """Blocks to keep in floating point for ``target_psnr`` on the
            validation frames: ``keep_fp32``, then the most sensitive ones.
            ``full``: the validation mouth PSNR with only ``keep_fp32`` in
            floating point; ``score(float_blocks, only)``: with
            ``float_blocks`` in floating point, or with only block ``only``
            int8."""
            sensitivity: dict[str, float] = {}
            kept = list(keep_fp32)
            aim = None if target_psnr is None else target_psnr + _HEADROOM
            if aim is not None and full < aim:
                say(f"  {label}: below {aim:g} dB ({target_psnr:g} dB + {_HEADROOM:g} dB headroom): measuring each "
                    "block's sensitivity ...")
                for b in blocks:
                    if b not in keep_fp32:
                        sensitivity[b] = score([], b)
                ranking = sorted(sensitivity, key=sensitivity.get)
                say(f"  {label}: most sensitive: " + ", ".join(f"{b} {sensitivity[b]:.1f} dB" for b in ranking[:5]))
                extra, best = search_fp32_blocks(ranking, lambda fb: score(kept + fb, None), aim)
                kept += extra
                say(f"  {label}: {len(kept)} of {len(blocks)} blocks kept in floating point -> validation mouth "
                    f"PSNR {best:.2f} dB")
            else:
                best = full
            return kept, {"sensitivity": sensitivity, "validation_psnr": best}

        def onnxruntime_candidate() -> dict:
            def quantized(dst: Path, method: str, exclude: Sequence[str] = (), include: Sequence[str] | None = None):
                with _failure(model, f"in ONNX Runtime's quantizer ({method})", work):
                    _quantize_file(src, dst, method, work / f"{method}.json", exclude=exclude, include=include,
                                   per_channel=per_channel)

            def score(method: str, fp32_blocks: Sequence[str] = (), only: str | None = None) -> float:
                dst = work / "candidate.onnx"
                quantized(dst, method, [n for b in fp32_blocks for n in node_names[b]],
                          node_names[only] if only else None)
                with _failure(model, f"while running the int8 model ({method} calibration)", work):
                    return val_psnr(_run(_cpu_engine(dst, threads), val))

            method_scores = {}
            for method in methods:
                say(f"ONNX Runtime: calibrating ({method}) ...")
                with _failure(model, f"while calibrating ({method})", work):
                    _calibrate(src, method, cal, work / f"{method}.json", work)
                method_scores[method] = score(method, keep_fp32)
                say(f"  {method}: every block int8 -> validation mouth PSNR {method_scores[method]:.2f} dB")
            method = max(method_scores, key=method_scores.get)
            kept, found = search("ONNX Runtime", method_scores[method], lambda fb, only: score(method, fb, only))
            path = work / "onnxruntime_int8.onnx"
            quantized(path, method, [n for b in kept for n in node_names[b]])
            return {"path": path, "tool": "onnxruntime", "runtime": "onnxruntime", "precision": "fp32",
                    "method": method, "methods": method_scores, "float_blocks": kept, **found}

        def nncf_candidate() -> dict:
            import openvino as ov

            say(f"NNCF: calibrating (MeanMinMax), candidates measured on OpenVINO at {ov_precision} ...")
            with _failure(model, "in NNCF's quantizer", work):
                every = _nncf_quantize(src, cal)
            core = ov.Core()

            def score(float_blocks: list[str], only: str | None) -> float:
                back = [b for b in blocks if b != only] if only is not None else float_blocks
                with _failure(model, "while running the NNCF int8 model in OpenVINO", work):
                    pred = _ov_predict(core, _float_blocks(every, back).SerializeToString(), val, ov_precision,
                                       n_threads)
                return val_psnr(pred)

            full = score(list(keep_fp32), None)
            say(f"  MeanMinMax: every block int8 -> validation mouth PSNR {full:.2f} dB")
            kept, found = search("NNCF", full, score)
            path = work / "nncf_int8.onnx"
            with _failure(model, "while writing the NNCF int8 model", work):
                final = _float_blocks(every, kept)
                _fold_weight_quantizers(final)
                onnx.save(final, str(path))
            del every, final
            return {"path": path, "tool": "nncf", "runtime": "openvino", "precision": ov_precision,
                    "method": "MeanMinMax", "methods": {"MeanMinMax": full}, "float_blocks": kept, **found}

        built = {_INT8[t]: onnxruntime_candidate() if t == "onnxruntime" else nncf_candidate() for t in tools}

        say("measuring held-out fidelity and speed ...")
        held = feeds_for("heldout")
        boxes = [tpl.box(int(k)) for k in sets["heldout"]]
        engines = {FP32: engine}
        specs = {FP32: {"tool": None, "runtime": "onnxruntime", "precision": "fp32", "int8": False}}
        if bf16:
            with _failure(model, "while opening it in OpenVINO at bf16"):
                engines[BF16] = _cpu_engine(model, threads, "openvino", "bf16")
            specs[BF16] = {"tool": None, "runtime": "openvino", "precision": "bf16", "int8": False}
        for name, c in built.items():
            with _failure(model, f"while opening the {name} model", work):
                engines[name] = _cpu_engine(c["path"], threads, c["runtime"], c["precision"])
            specs[name] = {"tool": c["tool"], "runtime": c["runtime"], "precision": c["precision"], "int8": True,
                           "method": c["method"], "float_blocks": [b for b in blocks if b in c["float_blocks"]],
                           "validation_psnr": c["validation_psnr"]}
        preds = {}
        for name, e in engines.items():
            with _failure(model, f"while running the {name} model", work):
                preds[name] = _run(e, held)
        f32 = pasted("heldout", preds[FP32])
        speed_feeds = held if len(held) >= 2 * _BATCH else cal
        with _failure(model, "while timing the models", work):
            seconds = _timed(engines, speed_feeds)
        candidates: dict[str, dict] = {}
        for name, spec in specs.items():
            frames = pasted("heldout", preds[name])
            fid = {"mouth": fidelity(f32, frames, boxes=boxes), "frame": fidelity(f32, frames),
                   "unet": fidelity(_levels(preds[FP32]), _levels(preds[name]))}
            candidates[name] = {**spec, "seconds": seconds[name], "speedup": seconds[FP32] / seconds[name], **fid,
                                "met": target_psnr is None or fid["mouth"]["psnr"] >= target_psnr}
        chosen = choose_candidate(candidates, target_psnr)
        c, row = built[chosen], candidates[chosen]
        if len(built) > 1:
            say(f"keeping {chosen}: " + ("the fastest int8 model" if target_psnr is None else
                                         f"the fastest int8 model reaching {target_psnr:g} dB" if row["met"] else
                                         f"no int8 model reaches {target_psnr:g} dB; the closest to fp32"))
        advice = bf16_advice(candidates, chosen, str(model))
        if advice:
            notes.append(advice)

        output = Path(output)
        with atomic_path(output) as part:
            shutil.copyfile(c["path"], part)
            with _failure(model, "while checking the int8 model", work):  # output only as a model that loads and runs
                written = onnx.load(str(part))
                _check_runs(part, val.batch(0))
            if not any(n.op_type == "QuantizeLinear" for n in written.graph.node):
                notes.insert(0, "every block is in floating point: the output is the fp32 model with no int8 left")
            del written

    speed = {"fp32": seconds[FP32], "int8": seconds[chosen], "speedup": seconds[FP32] / seconds[chosen],
             "batch": _BATCH, "threads": n_threads, "frames": len(speed_feeds)}
    result = QuantizeReport(
        model=str(model), output=str(output), tool=c["tool"], runtime=c["runtime"], precision=c["precision"],
        method=c["method"], methods=c["methods"], target_psnr=target_psnr, met=row["met"],
        fp32_blocks=[b for b in blocks if b in c["float_blocks"]],
        int8_blocks=[b for b in blocks if b not in c["float_blocks"]], sensitivity=c["sensitivity"],
        frames={k: [int(i) for i in v] for k, v in sets.items()},
        feature_rows={k: [int(i) for i in v] for k, v in pairing.items()},
        fidelity={k: row[k] for k in ("mouth", "frame", "unet")}, speed=speed, candidates=candidates,
        seconds=time.perf_counter() - t_start, notes=notes,
    )
    result.save(report if report is not None else output.with_name(output.name + ".json"))
    return result
