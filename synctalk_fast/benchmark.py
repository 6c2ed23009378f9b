"""End-to-end benchmark: the pipeline against the U-Net alone and the loops it replaces.

``synctalk-fast bench`` (or ``python -m bench`` in a checkout) measures, in
one process, on the real template when it is found (``--data`` /
``$SYNCTALK_FAST_DATA`` / ``../shared/data``), else on a synthetic 720p
template, with fixed random weights (no trained weights are needed):

- ``naive``: one frame at a time, cv2 + numpy + ONNX Runtime exactly as
  numerics §3 (:mod:`synctalk_fast.reference`): the way the Go ports run; no video;
- ``torch``: the same loop with the PyTorch networks (when torch is installed);
- ``unet``: the U-Net alone on prepared inputs, at each batch size;
- ``frames``: :meth:`Pipeline.frames` to memory, cold and warm template cache;
- ``mp4``: :meth:`Pipeline.generate` to an MP4 with the default settings;
- ``features``: audio -> features for 60 s of speech;
- with ``--presets``: libx264 presets at CRF 20 (CPU time, bit rate, PSNR),
  and the MP4 writer's speed on one core, on all cores and on a hardware
  encoder where one runs.

Each measured row records frames/s, per-stage seconds and peak RSS. Ratios
are taken between rows of the same round (these machines are shared and
noisy); with ``--rounds`` > 1 the median round is reported. The result is a
JSON record (machine, versions, provider, rows, ratios, targets) and a PNG
bar chart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ._version import __version__
from . import _backend
from .audio import load_audio
from ._filters import SAMPLE_RATE
from ._util.progress import StageTimer
from .demo import synthetic_speech, synthetic_template
from .engine import Engine
from .features import feature_windows
from .frames import prepare_input
from .models import export_onnx, random_state_dict, resolve_model
from .pipeline import Pipeline
from .quantization import quantize
from .runtime import (DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, SessionRequest, default_providers, default_threads,
                      get_runtime, is_accelerator, resolve_providers)
from ._util.system import cpu_cores
from .video import ENCODERS, X264_PRESETS, VideoWriter, encoder_problem
from .reference import (
    reference_audio_window,
    reference_box,
    reference_indices,
    reference_landmarks,
    reference_paste,
    reference_prepare,
)
from .template import Template

__all__ = ["run", "main", "machine_info"]

TARGETS = {  # 2-core CPU, fp32, real template, same run
    "mp4_vs_unet": 0.8,
    "frames_vs_unet": 0.9,
    "mp4_vs_torch": 4.0,
    "mp4_vs_naive": 1.0,
}


# -- machine ------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.splitlines() if ln.strip()]


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def machine_info() -> dict:
    """CPU model, cores, memory, GPUs, ONNX Runtime providers, package versions."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    mem = None
    try:
        mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (AttributeError, ValueError, OSError):
        pass
    info = {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": round(mem, 1) if mem else None,
        "gpus": _gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "available_providers": default_providers(),
        "kernel_backend": _backend.name,
        "versions": {
            name: _version(dist)
            for name, dist in (
                ("synctalk_fast", "synctalk-fast"), ("onnxruntime", "onnxruntime"), ("onnxruntime-gpu", "onnxruntime-gpu"),
                ("numpy", "numpy"), ("opencv", "opencv-python-headless"), ("av", "av"), ("torch", "torch"),
            )
            if _version(dist)
        },
    }
    info["versions"]["synctalk_fast"] = __version__
    if _backend.name == "cpp":
        from . import _core

        info["kernel_isa"] = _core.build_info().get("isa")
    return info


# -- measurement helpers ------------------------------------------------------


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
        return round(int(m.group(1)) / 1024, 1) if m else None
    except OSError:
        return None


def _row(name: str, label: str, frames: int, fn) -> dict:
    """Time ``fn()`` (which returns per-stage seconds or None) over ``frames`` frames."""
    _reset_peak_rss()
    t0 = time.perf_counter()
    stages = fn() or {}
    seconds = time.perf_counter() - t0
    row = {"name": name, "label": label, "frames": frames, "seconds": round(seconds, 4),
           "fps": round(frames / seconds, 3), "ms_per_frame": round(1000 * seconds / frames, 2),
           "stages": {k: round(v, 4) for k, v in stages.items()}, "peak_rss_mb": _peak_rss_mb()}
    print(f"  {label:<34s} {row['fps']:8.2f} frames/s {row['ms_per_frame']:8.1f} ms/frame", flush=True)
    return row


# -- the loops ----------------------------------------------------------------


def _reference_loop(template: Path, feats: np.ndarray, unet) -> callable:
    """numerics §3 one frame at a time, as the reference and the Go ports run it:
    imread, landmarks, crop + cv2.resize + mask, the U-Net at batch 1
    (``unet(image, audio) -> pred``), cv2.resize back and paste. Returns
    ``loop(n)``; the model is warmed up here, outside the timings."""
    n_tpl = len(list((template / "full_body_img").glob("*.jpg")))

    def loop(n: int) -> None:
        for i, idx in enumerate(reference_indices(n_tpl, n)):
            img = cv2.imread(str(template / "full_body_img" / f"{idx}.jpg"))
            box = reference_box(reference_landmarks(template / "landmarks" / f"{idx}.lms"))
            pred = unet(reference_prepare(img, box)[None], reference_audio_window(feats, i))
            reference_paste(img, box, pred[0])

    loop(1)
    return loop


def _naive_loop(unet_path: Path, template: Path, feats: np.ndarray, providers):
    """The reference loop on the runtime with its default session options."""
    sess = get_runtime().open(str(unet_path), providers=list(providers), request=SessionRequest(threads=0, plain=True))
    names = resolve_model(unet_path).roles.inputs  # role -> graph input name
    return _reference_loop(template, feats,
                           lambda image, audio: sess.run({names["image"]: image, names["audio"]: audio})[0])


def _torch_loop(state: dict, template: Path, feats: np.ndarray):
    """The PyTorch reference: the same loop with the torch U-Net (CPU, all cores, inference mode)."""
    import torch

    from .reference.torch_nets import UNet, load_numpy_state  # needs torch: the bench extra

    torch.set_num_threads(default_threads())
    net = load_numpy_state(UNet("ave"), state)

    def unet(image, audio):
        with torch.inference_mode():
            return net(torch.from_numpy(image), torch.from_numpy(audio)).numpy()

    return _reference_loop(template, feats, unet)


def _unet_inputs(tpl: Template, feats: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([prepare_input(tpl.frame(k % len(tpl), copy=False), tpl.box(k % len(tpl))) for k in range(batch)])
    return images, feature_windows(feats, mode="ave", start=0, stop=batch)


# -- x264 presets -------------------------------------------------------------


def _presets(tpl: Template, n: int) -> list[dict]:
    """Each libx264 preset at CRF 20 on ``n`` template frames: CPU ms/frame
    (one encoder thread), bit rate, PSNR against the source frames."""
    import io

    import av

    frames = [tpl.frame(k % len(tpl), copy=False) for k in range(n)]
    yuv = [cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420) for f in frames]
    height, width = frames[0].shape[:2]
    rows = []
    for preset in X264_PRESETS[:6]:  # ultrafast .. medium; slower ones are off any real-time budget
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as c:
            s = c.add_stream("libx264", rate=25, options={"crf": "20", "preset": preset})
            s.width, s.height, s.pix_fmt = width, height, "yuv420p"
            s.codec_context.thread_count = 1
            cpu0 = time.process_time()
            for i, y in enumerate(yuv):
                vf = av.VideoFrame.from_ndarray(y, format="yuv420p")
                vf.pts = i
                c.mux(s.encode(vf))
            c.mux(s.encode(None))
            cpu = time.process_time() - cpu0
        buf.seek(0)
        with av.open(buf) as d:
            decoded = [f.to_ndarray(format="yuv420p") for f in d.decode(video=0)]
        mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(decoded, yuv)])
        rows.append({"preset": preset, "cpu_ms_per_frame": round(1000 * cpu / n, 2),
                     "kbit_s": round(len(buf.getvalue()) * 8 * 25 / n / 1000, 1),
                     "psnr_db": round(10 * np.log10(255**2 / mse), 2)})
        r = rows[-1]
        print(f"  x264 {preset:<10s} {r['cpu_ms_per_frame']:6.1f} ms/frame {r['kbit_s']:7.0f} kbit/s "
              f"PSNR {r['psnr_db']:.2f} dB", flush=True)
    return rows


def _encoders(tpl: Template, n: int, work: Path) -> list[dict]:
    """Encoding speed of the MP4 writer alone (wall frames/s, 720p-class
    template frames, default preset): libx264 on one thread and on every
    core this process may use, and each hardware encoder that runs here."""
    frames = [tpl.frame(k % len(tpl), copy=False) for k in range(n)]
    plans = [("libx264", 1), ("libx264", cpu_cores())]
    plans += [(name, 0) for name in ENCODERS if name != "libx264" and encoder_problem(name) is None]
    rows = []
    for name, threads in plans:
        t0 = time.perf_counter()
        with VideoWriter(work / "encoder.mp4", encoder=name, threads=threads) as writer:
            for frame in frames:
                writer.write(frame)
        fps = n / (time.perf_counter() - t0)
        rows.append({"encoder": name, "threads": threads or None, "fps": round(fps, 1)})
        print(f"  encoder {name:<11s} threads {threads or '-':<3} {fps:7.1f} frames/s", flush=True)
    return rows


# -- chart --------------------------------------------------------------------


def write_chart(record: dict, path: Path) -> Path:
    """A horizontal bar chart of frames/s per row (drawn with OpenCV)."""
    rows = record["rows"]
    width, bar_h, left, top = 1000, 34, 330, 70
    height = top + bar_h * len(rows) + 60
    img = np.full((height, width, 3), 255, np.uint8)
    m = record["machine"]
    title = f"synctalk_fast {m['versions'].get('synctalk_fast')}: frames/s, {record['config']['provider']}"
    cv2.putText(img, title, (16, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    sub = f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpus'][0]}" if m["gpus"] else "")
    cv2.putText(img, sub[:110], (16, 54), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (80, 80, 80), 1, cv2.LINE_AA)
    top_fps = max(r["fps"] for r in rows)
    colors = {"naive": (90, 90, 200), "torch": (60, 60, 160), "unet": (160, 120, 60), "frames": (80, 170, 80),
              "mp4": (40, 140, 40), "unet_int8": (200, 150, 70), "mp4_int8": (20, 110, 20)}
    for i, r in enumerate(rows):
        y = top + i * bar_h
        w = int((width - left - 110) * r["fps"] / top_fps)
        color = colors.get(r["name"].split(":")[0], (120, 120, 120))
        cv2.rectangle(img, (left, y + 4), (left + max(w, 1), y + bar_h - 6), color, -1)
        cv2.putText(img, r["label"][:40], (16, y + bar_h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{r['fps']:.1f}", (left + w + 8, y + bar_h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    ratios = record["ratios"]
    foot = "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    cv2.putText(img, foot[:140], (16, height - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
    return path


# -- driver -------------------------------------------------------------------


def _find_data(data: str | os.PathLike | None) -> Path | None:
    candidates = [data] if data else [os.environ.get("SYNCTALK_FAST_DATA"), "../shared/data", "shared/data"]
    for c in candidates:
        if c and (Path(c) / "sanders" / "full_body_img").is_dir():
            return Path(c)
    return None


def _inputs(work: Path, data: Path | None, template: str | None, audio: str | None) -> tuple[Path, Path, str]:
    """(template folder, speech file, description)."""
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


def _ratios(rows: dict[str, dict]) -> dict[str, float]:
    out = {}
    for key, (a, b) in {
        "mp4_vs_unet": ("mp4", "unet"),
        "frames_vs_unet": ("frames", "unet"),
        "mp4_vs_torch": ("mp4", "torch"),
        "mp4_vs_naive": ("mp4", "naive"),
        "frames_vs_naive": ("frames", "naive"),
        "unet_vs_torch": ("unet", "torch"),
        "unet_int8_vs_unet": ("unet_int8", "unet"),
        "mp4_int8_vs_mp4": ("mp4_int8", "mp4"),
    }.items():
        if a in rows and b in rows:
            out[key] = round(rows[a]["fps"] / rows[b]["fps"], 3)
    return out


def run(
    *,
    frames: int = 200,
    data: str | os.PathLike | None = None,
    template: str | None = None,
    audio: str | None = None,
    providers: list[str] | None = None,
    batch_sizes: list[int] | None = None,
    batch_size: int | None = None,
    torch: bool = True,
    naive_frames: int | None = None,
    torch_frames: int | None = None,
    rounds: int = 1,
    presets: bool = False,
    precision: str = "fp32",
    runtime: str = DEFAULT_RUNTIME,
    int8: bool = False,
    output: str | os.PathLike = "bench/results",
) -> dict:
    """Run the benchmark and write ``bench-<time>.json`` + ``.png`` into ``output``.

    ``int8`` also quantizes the U-Net (:func:`synctalk_fast.models.quantize`,
    MinMax, every block, calibrated on the template and speech) and adds the
    int8 U-Net alone and the int8 pipeline to MP4, with the int8 model's
    fidelity on held-out frames.

    Returns the JSON record (a dict).
    """
    providers = resolve_providers(providers, runtime=runtime)
    gpu = is_accelerator(providers, runtime=runtime)
    out_dir = Path(output)
    with tempfile.TemporaryDirectory(prefix="synctalk-bench-") as tmp:
        work = Path(tmp)
        tpl_dir, speech, described = _inputs(work, _find_data(data), template, audio)
        print(f"synctalk_fast bench: {described}; {frames} frames; providers {providers}", flush=True)
        state = random_state_dict("unet", mode="ave", seed=0)
        export_onnx(state, work / "unet.onnx", kind="unet", mode="ave")
        export_onnx(random_state_dict("audio_encoder", seed=0), work / "encoder.onnx", kind="audio_encoder")
        pipe = Pipeline(work / "unet.onnx", work / "encoder.onnx", runtime=runtime, providers=providers,
                        batch_size=batch_size, precision=precision)
        tpl = pipe.template(tpl_dir)
        wav = load_audio(speech)
        feats_all = pipe.audio_features(wav)
        reps = -(-frames // len(feats_all))
        feats = np.concatenate([feats_all] * reps)[:frames] if reps > 1 else feats_all[:frames]
        clip = np.tile(wav, reps)[: max(1, (frames - 2)) * 640]
        sixty = np.tile(wav, -(-60 * SAMPLE_RATE // len(wav)))[: 60 * SAMPLE_RATE]

        batch_sizes = batch_sizes or ([1, 4, 8, 16, 32] if gpu else [1, 2, 4, 8])
        inputs = {b: _unet_inputs(tpl, feats_all, b) for b in batch_sizes}
        naive_n = naive_frames or (frames if gpu else min(frames, 100))
        torch_n = torch_frames or min(frames, 40)
        have_torch = torch and _version("torch") is not None

        # The U-Net alone in two layouts: the pipeline's sessions side by side
        # (one per core on CPU), and one session with every core's thread.
        engine = pipe.engine
        layouts = {"sessions": (engine, "throughput"), "single": (engine, "latency")}

        def unet_alone(b: int, engine: Engine, layout: str) -> None:
            img, aud = inputs[b]
            n = len(engine.layout_sessions(layout))
            per = max(1, frames // b // n)

            def work(k: int) -> None:
                for _ in range(per):
                    engine.infer(img, aud, session=k, layout=layout)

            threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        def unet_frames(b: int, engine: Engine, layout: str) -> int:
            n = len(engine.layout_sessions(layout))
            return max(1, frames // b // n) * b * n

        def warm(engine: Engine) -> None:  # every shape once, outside the timings
            for b in batch_sizes:
                for layout in ("throughput", "latency"):
                    for k in range(len(engine.layout_sessions(layout))):
                        engine.infer(*inputs[b], session=k, layout=layout)

        quant = None
        if int8:
            print("quantizing the U-Net to int8 (MinMax, every block) ...", flush=True)
            quant = quantize(work / "unet.onnx", work / "unet_int8.onnx", template=tpl, features=feats_all,
                             tool="onnxruntime", methods=("MinMax",), target_psnr=None, calibration=16, validation=1, heldout=16)
            pipe8 = Pipeline(work / "unet_int8.onnx", work / "encoder.onnx", providers=providers,
                             batch_size=batch_size)
            layouts8 = {"sessions": (pipe8.engine, "throughput"), "single": (pipe8.engine, "latency")}
            warm(pipe8.engine)

        # the original code's runtime: ONNX Runtime, whatever the pipeline runs on
        naive = _naive_loop(work / "unet.onnx", tpl_dir, feats,
                            providers if runtime == DEFAULT_RUNTIME else default_providers())
        torch_loop = _torch_loop(state, tpl_dir, feats) if have_torch else None
        warm(engine)
        for _ in pipe.frames(feats[:2], tpl):
            pass

        all_rounds = []
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", flush=True)
            rows: dict[str, dict] = {}
            features_60s = _time(lambda: pipe.audio_features(sixty))
            print(f"  {'audio -> features, 60 s of speech':<34s} {features_60s:8.2f} s", flush=True)
            per_batch = {}
            for name, (eng, layout) in layouts.items():
                sessions = eng.layout_sessions(layout)
                what = (f"{len(sessions)} sessions x {sessions[0].threads} thread(s)" if len(sessions) > 1
                        else f"1 session x {sessions[0].threads} thread(s)")
                for b in batch_sizes:
                    key = f"unet:{name}:b{b}"
                    per_batch[key] = _row(key, f"U-Net alone, {what}, batch {b}", unet_frames(b, eng, layout),
                                          lambda b=b, eng=eng, layout=layout: unet_alone(b, eng, layout))
            best = max(per_batch, key=lambda k: per_batch[k]["fps"])
            rows["unet"] = dict(per_batch[best], name="unet", label="U-Net alone, best of these")
            rows["naive"] = _row("naive", "naive loop, cv2+numpy+ORT, 1 frame", naive_n, lambda: naive(naive_n))
            if torch_loop is not None:
                rows["torch"] = _row("torch", "PyTorch reference loop", torch_n, lambda: torch_loop(torch_n))
            if r == 0:
                tpl.cache.clear()
                rows["frames_cold"] = _row("frames:cold", "pipeline -> memory, cold cache", frames,
                                           lambda: _frames(pipe, feats, tpl))
            rows["frames"] = _row("frames", "pipeline -> memory", frames, lambda: _frames(pipe, feats, tpl))
            rows["mp4"] = _row("mp4", "pipeline -> MP4 (default settings)", frames,
                               lambda: pipe.generate(clip, features=feats, template=tpl, output=work / "out.mp4",
                                                     progress=False).timings)
            if quant is not None:
                per8 = {}
                for name, (eng, layout) in layouts8.items():
                    n_sessions = len(eng.layout_sessions(layout))
                    for b in batch_sizes:
                        key = f"unet8:{name}:b{b}"
                        per8[key] = _row(key, f"int8 U-Net alone, {n_sessions} session(s), batch {b}",
                                         unet_frames(b, eng, layout),
                                         lambda b=b, eng=eng, layout=layout: unet_alone(b, eng, layout))
                best8 = max(per8, key=lambda k: per8[k]["fps"])
                rows["unet_int8"] = dict(per8[best8], name="unet_int8", label="int8 U-Net alone, best of these")
                rows["mp4_int8"] = _row("mp4_int8", "pipeline -> MP4, int8 U-Net", frames,
                                        lambda: pipe8.generate(clip, features=feats, template=tpl,
                                                               output=work / "out8.mp4", progress=False).timings)
                rows.update(per8)
            rows.update(per_batch)
            all_rounds.append({"rows": rows, "ratios": _ratios(rows), "features_60s": round(features_60s, 3)})
            print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in all_rounds[-1]["ratios"].items()), flush=True)

        # the median round by the pipeline's ratio to the U-Net alone
        chosen = sorted(all_rounds, key=lambda x: x["ratios"].get("mp4_vs_unet", 0))[len(all_rounds) // 2]
        fp16 = _fp16_report(pipe, work, feats, tpl, providers) if gpu and precision == "fp32" else None
        preset_rows = _presets(tpl, min(frames, 100)) if presets else None
        encoder_rows = _encoders(tpl, min(frames, 100), work) if presets else None

    order = ["naive", "torch", "unet", "frames_cold", "frames", "mp4", "unet_int8", "mp4_int8"]
    rows = chosen["rows"]
    record = {
        "synctalk_fast": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "config": {
            "inputs": described, "frames": frames, "providers": providers, "provider": pipe.engine.providers[0],
            "runtime": pipe.engine.runtime, "precision": precision, "batch_size": pipe.batch_size,
            "sessions": len(pipe.engine.sessions), "threads_per_session": pipe.engine.unet.threads,
            "rounds": rounds, "weights": "fixed random (seed 0)",
        },
        "rows": [rows[k] for k in order if k in rows] + [rows[k] for k in rows if k.startswith(("unet:", "unet8:"))],
        "ratios": chosen["ratios"],
        "all_rounds_ratios": [x["ratios"] for x in all_rounds],
        "targets": {k: {"target": t, "value": chosen["ratios"].get(k), "met": chosen["ratios"].get(k, 0) >= t}
                    for k, t in TARGETS.items() if k in chosen["ratios"]},
        "features_60s_seconds": chosen["features_60s"],
    }
    if fp16:
        record["fp16"] = fp16
    if quant is not None:
        record["int8"] = {"fidelity_heldout": quant.fidelity, "method": quant.method,
                          "unet_speedup_same_run": chosen["ratios"].get("unet_int8_vs_unet"),
                          "mp4_fps": rows["mp4_int8"]["fps"], "real_time": rows["mp4_int8"]["fps"] >= 25.0}
    if preset_rows:
        record["x264_presets"] = preset_rows
        record["encoders"] = encoder_rows
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    png_path = write_chart(record, out_dir / f"bench-{stamp}.png")
    record["files"] = {"json": str(json_path), "png": str(png_path)}
    print(f"wrote {json_path} and {png_path}")
    return record


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _frames(pipe: Pipeline, feats: np.ndarray, tpl: Template) -> dict:
    timer = StageTimer()
    for _ in pipe.frames(feats, tpl, _timer=timer):
        pass
    return dict(timer.totals)


def _fp16_report(pipe: Pipeline, work: Path, feats: np.ndarray, tpl: Template, providers) -> dict:
    """fp16 U-Net on the GPU: speed and the frame difference against fp32."""
    half = Pipeline(work / "unet.onnx", providers=providers, precision="fp16", batch_size=pipe.batch_size)
    n = min(len(feats), 64)
    a = list(pipe.frames(feats[:n], tpl))
    b = list(half.frames(feats[:n], tpl))
    diff = np.abs(np.stack(a).astype(np.int16) - np.stack(b))
    img, aud = _unet_inputs(tpl, feats, pipe.batch_size)
    speed = {}
    for name, engine in (("fp32", pipe.engine), ("fp16", half.engine)):
        engine.infer(img, aud)
        speed[name] = round(20 * len(img) / _time(lambda e=engine: [e.infer(img, aud) for _ in range(20)]), 2)
    report = {"frames": n, "max_abs_levels": int(diff.max()), "mean_abs_levels": round(float(diff.mean()), 4),
              "unet_fps": speed}
    print(f"  fp16 vs fp32: {report}", flush=True)
    return report


def build_parser(prog: str = "synctalk-fast bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Benchmark the pipeline against the U-Net alone, the naive "
                                "ONNX Runtime loop and the PyTorch reference loop; write a JSON record and a PNG chart.")
    p.add_argument("--frames", type=int, default=200, help="frames per measurement (default: 200)")
    p.add_argument("--data", help="shared data folder (default: $SYNCTALK_FAST_DATA or ../shared/data)")
    p.add_argument("--template", help="template folder (default: the shared template, else a synthetic one)")
    p.add_argument("--audio", help="speech file (default: the shared speech, else synthetic)")
    p.add_argument("--providers", help="ONNX Runtime providers, comma-separated (default: best available)")
    p.add_argument("--batch-size", type=int, help="pipeline batch size (default: by provider)")
    p.add_argument("--batch-sizes", help="U-Net alone batch sizes, comma-separated")
    p.add_argument("--runtime", choices=tuple(RUNTIMES), default=DEFAULT_RUNTIME, help="inference runtime of the pipeline")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference loop")
    p.add_argument("--naive-frames", type=int, help="frames for the naive loop (default: min(frames, 100) on CPU)")
    p.add_argument("--torch-frames", type=int, help="frames for the PyTorch loop (default: min(frames, 40))")
    p.add_argument("--rounds", type=int, default=1, help="repeat everything; report the median round (default 1)")
    p.add_argument("--presets", action="store_true", help="also measure libx264 presets at CRF 20 and the encoders' scaling")
    p.add_argument("--int8", action="store_true", help="also quantize the U-Net and measure it (alone and to MP4)")
    p.add_argument("-o", "--output", default="bench/results", help="folder for the JSON and PNG (default: bench/results)")
    return p


def main(argv: list[str] | None = None, *, prog: str = "synctalk-fast bench") -> int:
    args = build_parser(prog).parse_args(argv)
    run(frames=args.frames, data=args.data, template=args.template, audio=args.audio,
        providers=args.providers.split(",") if args.providers else None,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None,
        batch_size=args.batch_size, torch=not args.no_torch, naive_frames=args.naive_frames,
        torch_frames=args.torch_frames, rounds=args.rounds, presets=args.presets, precision=args.precision,
        runtime=args.runtime,
        int8=args.int8, output=args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
