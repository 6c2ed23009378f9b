""":func:`quantize`: an int8 U-Net calibrated on the user's template and
speech, written with a fidelity report. The recipe only: each step lives in
its module (:mod:`.data`, :mod:`.model`, :mod:`.tools`, :mod:`.search`,
:mod:`~synctalk_fast.quantize.evaluate`, :mod:`~synctalk_fast.quantize.report`).

Every file written lives in a temporary folder (deleted on exit, on error
too), except the output, which only appears complete (atomically), after it
has loaded and run in ONNX Runtime, and the report beside it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._util.atomic import atomic_path
from .._util.deprecation import renamed
from ..engine import Engine, EngineOptions
from ..errors import ModelError
from ..models import resolve_model
from ..runtime import default_threads
from ..template import Template
from . import tools
from .data import FrameData, speech_features, template_of
from .evaluate import Validation, measure, open_engines
from .failure import failure
from .model import prepare_model
from .report import FP32, INT8, QuantizeReport, bf16_advice, choose_candidate
from .runs import batch_size, check_runs, cpu_engine, openvino_bf16, predict

__all__ = ["quantize", "METHODS"]

log = logging.getLogger(__name__)

#: ONNX Runtime's calibration methods ``quantize(methods=...)`` tries.
METHODS = ("MinMax", "Percentile", "Entropy")
#: The engine options quantize takes; the others are fixed per candidate (CPU, one session, its runtime and precision).
_OPTIONS = ("threads", "batch_size", "cache_mb")


def quantize(
    unet: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    template: Template | str | os.PathLike[str],
    audio: Any = None,
    audio_encoder: str | os.PathLike[str] | None = None,
    features: Any = None,
    report: str | os.PathLike[str] | None = None,
    tool: str = "auto",
    methods: Sequence[str] = METHODS,
    target_psnr: float | None = 40.0,
    calibration: int = 32,
    validation: int = 8,
    heldout: int = 32,
    keep_fp32: Sequence[str] = (),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    options: EngineOptions | None = None,
    **engine_options: Any,
) -> QuantizeReport:
    """Quantize a U-Net to int8, calibrated on the user's template and speech.

    Draws network inputs from the template's frames and the speech's
    features (the real input distribution), splits the frames into
    calibration, validation and held-out sets, and builds one int8 candidate
    per tool:

    - ONNX Runtime (runs on ONNX Runtime; blocks left in floating point run
      in fp32): calibrates with each method asked for and keeps the one
      whose fully quantized model is closest to fp32 on the validation frames;
    - NNCF (OpenVINO's post-training quantization; runs on OpenVINO, where
      blocks left in floating point run in bf16 on CPUs with avx512_bf16 /
      AMX, else in fp32): quantizes every block once on the same frames.

    When a candidate misses ``target_psnr`` (plus 1 dB headroom), the
    sensitivity of every block is measured (that block alone int8) and the
    most sensitive stay in floating point, as few as reach it. Every
    candidate, ONNX Runtime fp32 (the reference) and, where the CPU runs it
    natively, OpenVINO bf16 are then measured on the held-out frames: PSNR
    and max / mean level difference over the mouth box and the whole frame,
    and speed on each one's runtime, in the same run. The fastest int8
    candidate reaching ``target_psnr`` there is written
    (:func:`~synctalk_fast.quantize.choose_candidate`).

    Parameters
    ----------
    unet : str or os.PathLike
        fp32 U-Net ONNX file (any exporter; see :func:`~synctalk_fast.models.load_session`).
        Per-channel int8 weights need opset 13: a model of a lower opset
        (e.g. ``torch.onnx.export(..., opset_version=11)``, what SyncTalk_2D
        and the Go ports' export scripts write) is converted to opset 13 in
        memory, and the conversion checked on one frame against the
        original. If that fails, the weights are quantized per tensor
        instead (less faithful), with a log warning and a note in the
        report. ``unet`` itself is never changed. (``model=`` is its
        deprecated name.)
    output : str or os.PathLike
        Where to write the int8 model (QDQ ONNX, the opset of ``unet`` or
        13 after a conversion). ``Pipeline(unet=output)`` runs it on either
        runtime; it is fast on the runtime and precision the report names
        (:attr:`QuantizeReport.runtime`, :attr:`QuantizeReport.precision`).
        It appears at once, complete, after it has loaded and run in ONNX
        Runtime; a failure before then leaves ``output`` as it was, and no
        file beside it.
    template : Template, str or os.PathLike, keyword-only
        The person's template: its frames are the image inputs.
    audio, audio_encoder : keyword-only
        Speech (file or float32 samples at 16 kHz) and the ave encoder, for
        the audio inputs; or ``features`` (file or float32 ``[F, D]`` array,
        any mode) instead.
    report : str or os.PathLike, optional, keyword-only
        JSON report path (default: ``output`` with ``.json`` added).
    tool : {"auto", "onnxruntime", "nncf"}, keyword-only
        Who quantizes. ``"onnxruntime"``: ONNX Runtime's tools, the model
        runs on ONNX Runtime. ``"nncf"``: NNCF (the ``openvino`` extra), the
        model runs on OpenVINO. ``"auto"``: both when NNCF and OpenVINO are
        installed (else ONNX Runtime's, with a note), and the best candidate
        is written.
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
    seed : int, keyword-only
        Seed of the frame split and the frame / feature pairing.
    progress : callable, optional, keyword-only
        Called with a line of text at each step.
    options : EngineOptions, optional, keyword-only
        ``threads`` (of every runtime; default: all cores), ``batch_size``
        (frames per U-Net call when measuring; default 4) and ``cache_mb``
        (the template's frame cache). Every model runs on the host CPU in
        one session, on its candidate's runtime and precision, so the other
        options cannot be set.
    **engine_options
        Those fields by name (``threads=``, ...), over ``options``.

    Returns
    -------
    QuantizeReport
        Also written to ``report``.

    Raises
    ------
    ModelError
        ``unet`` is not a usable U-Net, or the quantization tools (ONNX,
        ONNX Runtime, NNCF, OpenVINO) failed on it (reading, calibrating,
        quantizing, running an int8 model): one line naming ``unet`` and
        the reason.
    TemplateError, FeatureError
        The template or the speech's features cannot be used.
    ValueError
        Unknown tool, calibration method or ``keep_fp32`` block; ``tool="nncf"``
        without NNCF or OpenVINO installed; an engine option quantize cannot honour.
    TypeError
        ``unet`` or ``output`` missing, or an unknown keyword.
    OSError
        Files cannot be read or written (disk full, permissions).
    """
    t_start = time.perf_counter()
    if "model" in engine_options:
        unet = renamed({"model": engine_options.pop("model")}, {"unet": unet}, {"model": "unet"}, where="quantize")[
            "unet"
        ]
    if unet is None or output is None:
        raise TypeError(f"quantize() missing required argument {'unet' if unet is None else 'output'!r}")
    name, out = str(unet), Path(output)
    opts = _engine_options(options, engine_options)
    say = progress or (lambda line: log.info("%s", line))
    _check_methods(methods)
    notes: list[str] = []
    chosen_tools = tools.select(tool, notes)
    engine = _fp32_engine(unet, opts)
    tpl = template_of(template, opts.cache_mb)
    rows, windowed = speech_features(features, audio, audio_encoder, str(engine.mode), opts.threads)
    data = FrameData(
        engine, tpl, rows, windowed, {"heldout": heldout, "calibration": calibration, "validation": validation}, seed
    )
    say(
        f"frames: {len(data.sets['calibration'])} calibration, {len(data.sets['validation'])} validation, "
        f"{len(data.sets['heldout'])} held out (of {len(tpl)})"
    )
    batch = batch_size(opts)
    cal, val = data.feeds("calibration"), data.feeds("validation")
    reference = predict(engine, val, batch)
    with tempfile.TemporaryDirectory(prefix="synctalk-quant-") as tmp:
        work = Path(tmp)
        prepared = prepare_model(
            name,
            engine.unet.model_path,
            work,
            check=val.head(1),
            reference=reference[:1],
            options=opts,
            notes=notes,
            say=say,
        )
        _check_blocks(keep_fp32, prepared.blocks)
        job = tools.Job(
            model=name,
            src=prepared.src,
            blocks=prepared.blocks,
            node_names=prepared.node_names,
            per_channel=prepared.per_channel,
            calibration=cal,
            validation=val,
            validation_psnr=Validation(data, reference).psnr,
            methods=methods,
            keep_fp32=keep_fp32,
            options=opts,
            work=work,
            say=say,
        )
        built = {INT8[t.name]: tools.build(t, job, target_psnr) for t in chosen_tools}
        say("measuring held-out fidelity and speed ...")
        engines, specs = open_engines(
            name, engine, built, prepared.blocks, options=opts, bf16=openvino_bf16(), work=work
        )
        candidates, timed = measure(name, engines, specs, data, target_psnr=target_psnr, batch=batch, work=work)
        chosen = choose_candidate(candidates, target_psnr)
        if len(built) > 1:
            say(f"keeping {chosen}: " + _why(candidates[chosen]["met"], target_psnr))
        advice = bf16_advice(candidates, chosen, name)
        if advice:
            notes.append(advice)
        _write_output(name, built[chosen].path, out, val.batch(0), notes, work)
    result = _report(
        name,
        out,
        built[chosen],
        candidates,
        prepared.blocks,
        data,
        target_psnr,
        {"batch": batch, "threads": opts.threads or default_threads(), "frames": timed},
        notes,
    )
    result.seconds = time.perf_counter() - t_start
    result.save(report if report is not None else out.with_name(out.name + ".json"))
    return result


def _engine_options(options: EngineOptions | None, overrides: dict[str, Any]) -> EngineOptions:
    """The engine options of a call; ValueError for one quantize cannot honour."""
    opts = EngineOptions.merge(options, overrides, where="quantize")
    fixed = [k for k in opts.changed() if k not in _OPTIONS]
    if fixed:
        raise ValueError(
            f"quantize runs every model on the host CPU in one session, on its candidate's runtime and "
            f"precision: {', '.join(fixed)} cannot be set (it takes {', '.join(_OPTIONS)})"
        )
    return opts


def _check_methods(methods: Sequence[str]) -> None:
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown calibration method {m!r}; expected some of {', '.join(METHODS)}")
    if not methods:
        raise ValueError("give at least one calibration method")


def _check_blocks(keep_fp32: Sequence[str], blocks: Sequence[str]) -> None:
    unknown = sorted(set(keep_fp32) - set(blocks))
    if unknown:
        raise ValueError(f"keep_fp32: no block {unknown[0]!r}; blocks are {', '.join(blocks)}")


def _fp32_engine(unet: str | os.PathLike[str], options: EngineOptions) -> Engine:
    """The fp32 U-Net on ONNX Runtime (the reference); ModelError for an audio encoder."""
    kind = resolve_model(unet, providers=["cpu"]).kind
    if kind != "unet":
        raise ModelError(f"{unet}: is an audio encoder; quantize takes a U-Net")
    return cpu_engine(unet, options)


def _why(met: bool, target_psnr: float | None) -> str:
    if target_psnr is None:
        return "the fastest int8 model"
    if met:
        return f"the fastest int8 model reaching {target_psnr:g} dB"
    return f"no int8 model reaches {target_psnr:g} dB; the closest to fp32"


def _write_output(model: str, path: Path, output: Path, feed: dict[str, Any], notes: list[str], work: Path) -> None:
    """Copy the chosen model to ``output`` (atomically), once it loads and runs ``feed`` in ONNX Runtime."""
    import onnx

    with atomic_path(output) as part:
        shutil.copyfile(path, part)
        with failure(model, "while checking the int8 model", work):
            written = onnx.load(str(part))
            check_runs(part, feed)
        if not any(n.op_type == "QuantizeLinear" for n in written.graph.node):
            notes.insert(0, "every block is in floating point: the output is the fp32 model with no int8 left")


def _report(
    model: str,
    output: Path,
    c: tools.Candidate,
    candidates: dict[str, dict],
    blocks: Sequence[str],
    data: FrameData,
    target_psnr: float | None,
    run: dict[str, int],
    notes: list[str],
) -> QuantizeReport:
    row, fp32 = candidates[INT8[c.tool]], candidates[FP32]["seconds"]
    frames, feature_rows = data.indices()
    return QuantizeReport(
        model=model,
        output=str(output),
        tool=c.tool,
        runtime=c.runtime,
        precision=c.precision,
        method=c.method,
        methods=c.methods,
        target_psnr=target_psnr,
        met=row["met"],
        fp32_blocks=[b for b in blocks if b in c.float_blocks],
        int8_blocks=[b for b in blocks if b not in c.float_blocks],
        sensitivity=c.found.sensitivity,
        frames=frames,
        feature_rows=feature_rows,
        fidelity={k: row[k] for k in ("mouth", "frame", "unet")},
        speed={"fp32": fp32, "int8": row["seconds"], "speedup": fp32 / row["seconds"], **run},
        candidates=candidates,
        seconds=0.0,
        notes=notes,
    )
