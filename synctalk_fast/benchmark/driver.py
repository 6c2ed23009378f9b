"""The benchmark's driver: inputs, the measured rounds, the record (JSON + PNG), and its command line.

Everything runs in one process and one temporary folder; the models are
fixed random weights exported there. Rounds are measured whole and the
median round (by the pipeline's ratio to the U-Net alone) is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._filters import SAMPLE_RATE
from .._util.atomic import write_atomic
from .._util.progress import StageTimer
from .._version import __version__
from ..audio import load_audio
from ..demo import synthetic_speech, synthetic_template
from ..engine import Engine, EngineOptions
from ..engine.options import add_arguments
from ..models import export_onnx, random_state_dict
from ..pipeline import Pipeline
from ..quantize import quantize
from ..runtime import DEFAULT_RUNTIME, default_providers
from ..template import Template
from .chart import write_chart
from .encoders import encoder_rows, preset_rows
from .loops import Loop, naive_loop, torch_loop
from .machine import machine_info, package_version
from .measure import span, timed_row
from .unet import UNetInputs, best, fp16_speed, labels_count, labels_sessions, layout_rows, unet_inputs, warm

__all__ = ["TARGETS", "run", "main", "build_parser"]

TARGETS = {  # 2-core CPU, fp32, real template, same run
    "mp4_vs_unet": 0.8,
    "frames_vs_unet": 0.9,
    "mp4_vs_torch": 4.0,
    "mp4_vs_naive": 1.0,
}

# ratio -> (row, row it is taken against)
_RATIOS = {
    "mp4_vs_unet": ("mp4", "unet"),
    "frames_vs_unet": ("frames", "unet"),
    "mp4_vs_torch": ("mp4", "torch"),
    "mp4_vs_naive": ("mp4", "naive"),
    "frames_vs_naive": ("frames", "naive"),
    "unet_vs_torch": ("unet", "torch"),
    "unet_int8_vs_unet": ("unet_int8", "unet"),
    "mp4_int8_vs_mp4": ("mp4_int8", "mp4"),
}
# the record's rows, in the chart's order (then the per-layout U-Net rows)
_ORDER = ["naive", "torch", "unet", "frames_cold", "frames", "mp4", "unet_int8", "mp4_int8"]


def _find_data(data: str | os.PathLike[str] | None) -> Path | None:
    candidates = [data] if data else [os.environ.get("SYNCTALK_FAST_DATA"), "../shared/data", "shared/data"]
    for c in candidates:
        if c and (Path(c) / "sanders" / "full_body_img").is_dir():
            return Path(c)
    return None


def _inputs(work: Path, data: Path | None, template: str | None, audio: str | None) -> tuple[Path, Path, str]:
    """(template folder, speech file, description): the shared data's, else synthetic ones in ``work``."""
    import soundfile as sf

    if template is None and data is not None:
        template = str(data / "sanders")
    if audio is None and data is not None:
        audio = str(data / "audio" / "talk_hb.wav")
    what = []
    if template is None:
        template = str(synthetic_template(work / "template", frames=100, width=1280, height=720))
        what.append("synthetic 1280x720 template (100 frames)")
    else:
        what.append(f"template {template}")
    if audio is None:
        audio = str(work / "speech.wav")
        sf.write(audio, synthetic_speech(20.0), SAMPLE_RATE, subtype="PCM_16")
        what.append("synthetic speech")
    else:
        what.append(f"audio {audio}")
    return Path(template), Path(audio), ", ".join(what)


def _ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {
        key: round(rows[a]["fps"] / rows[b]["fps"], 3) for key, (a, b) in _RATIOS.items() if a in rows and b in rows
    }


def _ort_providers(engine: Engine) -> list[str]:
    """ONNX Runtime's providers for the loops the pipeline replaces, whatever runtime the pipeline runs on."""
    return engine.providers if engine.runtime == DEFAULT_RUNTIME else default_providers()


@dataclass
class _Bench:
    """What the measured rounds run: the pipeline, its inputs and the loops to compare with."""

    work: Path
    described: str  # the inputs, in words
    pipe: Pipeline
    tpl: Template
    feats: np.ndarray  # float32 [frames, 512]: the features of the measured frames
    clip: np.ndarray  # float32 16 kHz speech for those frames
    sixty: np.ndarray  # float32 60 s of speech
    inputs: dict[int, UNetInputs]
    frames: int
    naive_n: int
    torch_n: int
    naive: Loop
    torch_loop: Loop | None
    quant: Any = None  # QuantizeReport with --int8
    pipe8: Pipeline | None = None


def _prepare(
    work: Path,
    *,
    frames: int,
    data: str | os.PathLike[str] | None,
    template: str | None,
    audio: str | None,
    batch_sizes: list[int] | None,
    torch: bool,
    naive_frames: int | None,
    torch_frames: int | None,
    int8: bool,
    options: EngineOptions,
) -> _Bench:
    """Models, inputs and loops, warmed up (everything outside the timings)."""
    tpl_dir, speech, described = _inputs(work, _find_data(data), template, audio)
    state = random_state_dict("unet", mode="ave", seed=0)
    export_onnx(state, work / "unet.onnx", kind="unet", mode="ave")
    export_onnx(random_state_dict("audio_encoder", seed=0), work / "encoder.onnx", kind="audio_encoder")
    pipe = Pipeline(work / "unet.onnx", work / "encoder.onnx", options=options)
    engine = pipe.engine
    print(f"synctalk_fast bench: {described}; {frames} frames; providers {engine.providers}", flush=True)
    tpl = pipe.template(tpl_dir)
    wav = load_audio(speech)
    feats_all = pipe.audio_features(wav)
    reps = -(-frames // len(feats_all))
    feats = np.concatenate([feats_all] * reps)[:frames] if reps > 1 else feats_all[:frames]
    gpu = engine.accelerator
    inputs = {b: unet_inputs(tpl, feats_all, b) for b in batch_sizes or ([1, 4, 8, 16, 32] if gpu else [1, 2, 4, 8])}
    quant, pipe8 = None, None
    if int8:
        print("quantizing the U-Net to int8 (MinMax, every block) ...", flush=True)
        quant = quantize(
            work / "unet.onnx",
            work / "unet_int8.onnx",
            template=tpl,
            features=feats_all,
            tool="onnxruntime",
            methods=("MinMax",),
            target_psnr=None,
            calibration=16,
            validation=1,
            heldout=16,
        )
        pipe8 = Pipeline(
            work / "unet_int8.onnx",
            work / "encoder.onnx",
            options=EngineOptions(providers=tuple(_ort_providers(engine)), batch_size=options.batch_size),
        )
        warm(pipe8.engine, inputs)
    naive = naive_loop(work / "unet.onnx", tpl_dir, feats, _ort_providers(engine))
    reference = torch_loop(state, tpl_dir, feats) if torch and package_version("torch") is not None else None
    warm(engine, inputs)
    for _ in pipe.frames(feats[:2], tpl):
        pass
    return _Bench(
        work=work,
        described=described,
        pipe=pipe,
        tpl=tpl,
        feats=feats,
        clip=np.tile(wav, reps)[: max(1, (frames - 2)) * 640],
        sixty=np.tile(wav, -(-60 * SAMPLE_RATE // len(wav)))[: 60 * SAMPLE_RATE],
        inputs=inputs,
        frames=frames,
        naive_n=naive_frames or (frames if gpu else min(frames, 100)),
        torch_n=torch_frames or min(frames, 40),
        naive=naive,
        torch_loop=reference,
        quant=quant,
        pipe8=pipe8,
    )


def _frames(pipe: Pipeline, feats: np.ndarray, tpl: Template) -> dict[str, float]:
    """The pipeline to memory; its per-stage seconds."""
    timer = StageTimer()
    for _ in pipe.frames(feats, tpl, _timer=timer):
        pass
    return dict(timer.totals)


def _round(b: _Bench, first: bool) -> dict[str, Any]:
    """One round of every measurement: its rows, ratios and the 60 s features time."""
    rows: dict[str, dict[str, Any]] = {}
    features_60s = span(lambda: b.pipe.audio_features(b.sixty))
    print(f"  {'audio -> features, 60 s of speech':<34s} {features_60s:8.2f} s", flush=True)
    per_batch = layout_rows(b.pipe.engine, b.inputs, b.frames, key="unet", label=labels_sessions("U-Net"))
    rows["unet"] = best(per_batch, name="unet", label="U-Net alone, best of these")
    rows["naive"] = timed_row("naive", "naive loop, cv2+numpy+ORT, 1 frame", b.naive_n, lambda: b.naive(b.naive_n))
    if b.torch_loop is not None:
        loop = b.torch_loop
        rows["torch"] = timed_row("torch", "PyTorch reference loop", b.torch_n, lambda: loop(b.torch_n))
    if first:
        b.tpl.cache.clear()
        rows["frames_cold"] = timed_row(
            "frames:cold", "pipeline -> memory, cold cache", b.frames, lambda: _frames(b.pipe, b.feats, b.tpl)
        )
    rows["frames"] = timed_row("frames", "pipeline -> memory", b.frames, lambda: _frames(b.pipe, b.feats, b.tpl))
    rows["mp4"] = timed_row(
        "mp4",
        "pipeline -> MP4 (default settings)",
        b.frames,
        lambda: (
            b.pipe.generate(b.clip, features=b.feats, template=b.tpl, output=b.work / "out.mp4", progress=False).timings
        ),
    )
    if b.pipe8 is not None:
        pipe8 = b.pipe8
        per8 = layout_rows(pipe8.engine, b.inputs, b.frames, key="unet8", label=labels_count("int8 U-Net"))
        rows["unet_int8"] = best(per8, name="unet_int8", label="int8 U-Net alone, best of these")
        rows["mp4_int8"] = timed_row(
            "mp4_int8",
            "pipeline -> MP4, int8 U-Net",
            b.frames,
            lambda: (
                pipe8.generate(
                    b.clip, features=b.feats, template=b.tpl, output=b.work / "out8.mp4", progress=False
                ).timings
            ),
        )
        rows.update(per8)
    rows.update(per_batch)
    result: dict[str, Any] = {"rows": rows, "ratios": _ratios(rows), "features_60s": round(features_60s, 3)}
    print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()), flush=True)
    return result


def _fp16_report(b: _Bench) -> dict[str, Any]:
    """fp16 U-Net on the GPU: speed and the frame difference against fp32."""
    pipe = b.pipe
    half = Pipeline(
        b.work / "unet.onnx", options=pipe.engine.options.replace(precision="fp16", batch_size=pipe.batch_size)
    )
    n = min(len(b.feats), 64)
    full_frames = np.stack(list(pipe.frames(b.feats[:n], b.tpl))).astype(np.int16)
    diff = np.abs(full_frames - np.stack(list(half.frames(b.feats[:n], b.tpl))))
    speed = fp16_speed({"fp32": pipe.engine, "fp16": half.engine}, unet_inputs(b.tpl, b.feats, pipe.batch_size))
    report = {
        "frames": n,
        "max_abs_levels": int(diff.max()),
        "mean_abs_levels": round(float(diff.mean()), 4),
        "unet_fps": speed,
    }
    print(f"  fp16 vs fp32: {report}", flush=True)
    return report


def _record(b: _Bench, all_rounds: list[dict[str, Any]], *, rounds: int) -> dict[str, Any]:
    """The JSON record of the median round (by the pipeline's ratio to the U-Net alone)."""
    chosen = sorted(all_rounds, key=lambda x: x["ratios"].get("mp4_vs_unet", 0))[len(all_rounds) // 2]
    rows = chosen["rows"]
    engine = b.pipe.engine
    return {
        "synctalk_fast": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "config": {
            "inputs": b.described,
            "frames": b.frames,
            "providers": engine.providers,
            "provider": engine.providers[0],
            "runtime": engine.runtime,
            "precision": engine.options.precision,
            "batch_size": b.pipe.batch_size,
            "sessions": len(engine.sessions),
            "threads_per_session": engine.unet.threads,
            "rounds": rounds,
            "weights": "fixed random (seed 0)",
        },
        "rows": [rows[k] for k in _ORDER if k in rows] + [rows[k] for k in rows if k.startswith(("unet:", "unet8:"))],
        "ratios": chosen["ratios"],
        "all_rounds_ratios": [x["ratios"] for x in all_rounds],
        "targets": {
            k: {"target": t, "value": chosen["ratios"].get(k), "met": chosen["ratios"].get(k, 0) >= t}
            for k, t in TARGETS.items()
            if k in chosen["ratios"]
        },
        "features_60s_seconds": chosen["features_60s"],
    }


def run(
    *,
    frames: int = 200,
    data: str | os.PathLike[str] | None = None,
    template: str | None = None,
    audio: str | None = None,
    batch_sizes: list[int] | None = None,
    torch: bool = True,
    naive_frames: int | None = None,
    torch_frames: int | None = None,
    rounds: int = 1,
    presets: bool = False,
    int8: bool = False,
    output: str | os.PathLike[str] = "bench/results",
    options: EngineOptions | None = None,
    **engine_options: Any,
) -> dict[str, Any]:
    """Run the benchmark and write ``bench-<time>.json`` + ``.png`` into ``output``.

    Parameters
    ----------
    frames : int, keyword-only
        Frames per measurement.
    data : str or os.PathLike, optional, keyword-only
        The shared data folder (default: ``$SYNCTALK_FAST_DATA``, ``../shared/data``).
    template, audio : str, optional, keyword-only
        Template folder and speech file (default: the shared data's, else synthetic).
    batch_sizes : list of int, optional, keyword-only
        Batch sizes of the U-Net alone rows (default: 1, 2, 4, 8 on CPU; 1 .. 32 on a GPU).
    torch : bool, keyword-only
        Measure the PyTorch reference loop (when torch is installed).
    naive_frames, torch_frames : int, optional, keyword-only
        Frames of the naive and PyTorch loops.
    rounds : int, keyword-only
        Repeat everything; the median round is reported.
    presets : bool, keyword-only
        Also libx264 presets at CRF 20 and the encoders' speed.
    int8 : bool, keyword-only
        Also quantize the U-Net (MinMax, every block, calibrated on the
        template and speech) and add the int8 U-Net alone and the int8
        pipeline to MP4, with the int8 model's fidelity on held-out frames.
    output : str or os.PathLike, keyword-only
        Folder of the JSON record and the PNG chart.
    options : EngineOptions, optional, keyword-only
        How the pipeline's engine runs.
    **engine_options
        Any field of :class:`~synctalk_fast.engine.EngineOptions` by name
        (``runtime=``, ``providers=``, ``precision=``, ``batch_size=``, ...), over ``options``.

    Returns
    -------
    dict
        The JSON record (machine, versions, config, rows, ratios, targets, files).
    """
    opts = EngineOptions.merge(options, engine_options, where="benchmark.run")
    with tempfile.TemporaryDirectory(prefix="synctalk-bench-") as tmp:
        b = _prepare(
            Path(tmp),
            frames=frames,
            data=data,
            template=template,
            audio=audio,
            batch_sizes=batch_sizes,
            torch=torch,
            naive_frames=naive_frames,
            torch_frames=torch_frames,
            int8=int8,
            options=opts,
        )
        all_rounds = []
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", flush=True)
            all_rounds.append(_round(b, first=r == 0))
        record = _record(b, all_rounds, rounds=rounds)
        if b.pipe.engine.accelerator and opts.precision == "fp32":
            record["fp16"] = _fp16_report(b)
        if b.quant is not None:
            mp4 = next(r for r in record["rows"] if r["name"] == "mp4_int8")
            record["int8"] = {
                "fidelity_heldout": b.quant.fidelity,
                "method": b.quant.method,
                "unet_speedup_same_run": record["ratios"].get("unet_int8_vs_unet"),
                "mp4_fps": mp4["fps"],
                "real_time": mp4["fps"] >= 25.0,
            }
        if presets:
            record["x264_presets"] = preset_rows(b.tpl, min(frames, 100))
            record["encoders"] = encoder_rows(b.tpl, min(frames, 100), b.work)
    return _write(record, Path(output))


def _write(record: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The record as ``bench-<time>.json`` and its chart as ``.png`` (atomically); ``record`` with their paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = write_atomic(out_dir / f"bench-{stamp}.json", (json.dumps(record, indent=2) + "\n").encode())
    png_path = write_chart(record, out_dir / f"bench-{stamp}.png")
    record["files"] = {"json": str(json_path), "png": str(png_path)}
    print(f"wrote {json_path} and {png_path}")
    return record


def build_parser(prog: str = "synctalk-fast bench") -> argparse.ArgumentParser:
    """The benchmark's command line (engine flags from :func:`~synctalk_fast.engine.options.add_arguments`)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark the pipeline against the U-Net alone, the naive "
        "ONNX Runtime loop and the PyTorch reference loop; write a JSON record and a PNG chart.",
    )
    p.add_argument("--frames", type=int, default=200, help="frames per measurement (default: 200)")
    p.add_argument("--data", help="shared data folder (default: $SYNCTALK_FAST_DATA or ../shared/data)")
    p.add_argument("--template", help="template folder (default: the shared template, else a synthetic one)")
    p.add_argument("--audio", help="speech file (default: the shared speech, else synthetic)")
    p.add_argument("--batch-sizes", help="U-Net alone batch sizes, comma-separated")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference loop")
    p.add_argument("--naive-frames", type=int, help="frames for the naive loop (default: min(frames, 100) on CPU)")
    p.add_argument("--torch-frames", type=int, help="frames for the PyTorch loop (default: min(frames, 40))")
    p.add_argument("--rounds", type=int, default=1, help="repeat everything; report the median round (default 1)")
    p.add_argument(
        "--presets", action="store_true", help="also measure libx264 presets at CRF 20 and the encoders' scaling"
    )
    p.add_argument("--int8", action="store_true", help="also quantize the U-Net and measure it (alone and to MP4)")
    p.add_argument(
        "-o", "--output", default="bench/results", help="folder for the JSON and PNG (default: bench/results)"
    )
    add_arguments(p.add_argument_group("engine options of the pipeline"))
    return p


def main(argv: list[str] | None = None, *, prog: str = "synctalk-fast bench") -> int:
    """``synctalk-fast bench`` / ``python -m bench``: parse ``argv`` and :func:`run`; returns 0."""
    args = build_parser(prog).parse_args(argv)
    run(
        frames=args.frames,
        data=args.data,
        template=args.template,
        audio=args.audio,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None,
        torch=not args.no_torch,
        naive_frames=args.naive_frames,
        torch_frames=args.torch_frames,
        rounds=args.rounds,
        presets=args.presets,
        int8=args.int8,
        output=args.output,
        options=EngineOptions.from_args(args),
    )
    return 0
