"""Runtimes and precisions on this CPU, measured in one run.

For ONNX Runtime fp32 (the exact path), OpenVINO fp32 and OpenVINO bf16 /
fp16 (where the CPU runs them natively):

- the U-Net alone, ms/frame, in three layouts: one session per core (the
  engine's throughput layout), one session on every core (latency layout),
  and, for OpenVINO, one compiled model with its own throughput streams
  (``PERFORMANCE_HINT=THROUGHPUT``, one infer request per stream);
- the whole pipeline to MP4 (frames/s);
- fidelity against ONNX Runtime fp32 on the shared face U-Net (mouth box of
  real template frames driven by the template's own speech features), when
  the shared data is there (random weights exaggerate every error).

Usage: ``python bench/bench_runtimes.py [--frames 96] [--data ../shared/data]``.
Ratios are against ONNX Runtime fp32 in the same run; the machine is named.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

_root = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _root]  # measure the installed package

import synctalk_fast as stf  # noqa: E402
from synctalk_fast import models  # noqa: E402
from synctalk_fast._util.system import cpu_cores, cpu_flags, cpu_name  # noqa: E402
from synctalk_fast.demo import synthetic_template  # noqa: E402
from synctalk_fast.quantize import fidelity  # noqa: E402
from synctalk_fast.runtime import get_runtime  # noqa: E402
from synctalk_fast.runtime.openvino import PRECISION_HINTS, precision_problem  # noqa: E402


def candidates() -> list[tuple[str, str]]:
    found = [("onnxruntime", "fp32")]
    try:
        get_runtime("openvino")
    except ValueError:
        return found
    return found + [("openvino", p) for p in ("fp32", "bf16", "fp16") if precision_problem(p) is None]


def unet_ms(engine: stf.Engine, layout: str, image, audio, frames: int) -> float:
    sessions = len(engine.layout_sessions(layout))
    per = max(1, frames // len(image) // sessions)
    for k in range(sessions):
        engine.infer(image, audio, session=k, layout=layout)

    def work(k: int) -> None:
        for _ in range(per):
            engine.infer(image, audio, session=k, layout=layout)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(sessions)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 1000 * (time.perf_counter() - t0) / (per * len(image) * sessions)


def openvino_streams_ms(path: Path, precision: str, image, audio, frames: int) -> float:
    """One compiled model, OpenVINO's own throughput streams, an infer request per stream."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({"image": list(image.shape), "audio": list(audio.shape)})
    compiled = core.compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
    )
    streams = int(compiled.get_property("NUM_STREAMS"))
    queue = ov.AsyncInferQueue(compiled, max(1, streams))
    feeds = {"image": image, "audio": audio}
    for _ in range(streams):
        queue.start_async(feeds)
    queue.wait_all()
    runs = max(streams, frames // len(image))
    t0 = time.perf_counter()
    for _ in range(runs):
        queue.start_async(feeds)
    queue.wait_all()
    return 1000 * (time.perf_counter() - t0) / (runs * len(image))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--data", default=str(_root.parent / "shared" / "data"))
    args = p.parse_args()
    data = Path(args.data)
    face = data / "models" / "face_unet.pth"
    have_data = face.is_file() and (data / "sanders" / "landmarks").is_dir()
    machine = f"{cpu_name()}, {cpu_cores()} cores, {', '.join(k for k, v in cpu_flags().items() if v) or 'no bf16'}"
    print(f"machine: {machine}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        unet = work / "unet.onnx"
        if have_data:
            models.export_onnx(models.load_state_dict(face), unet)
            tpl = stf.Template(data / "sanders")
            feats = stf.load_features(data / "features" / "sanders_ave.bin")[0]
            start = 300
        else:
            models.export_onnx(models.random_state_dict("unet", mode="ave", seed=0), unet, kind="unet")
            tpl = stf.Template(synthetic_template(work / "tpl", frames=50))
            feats = np.random.default_rng(0).normal(0, 1, (200, 512)).astype(np.float32)
            start = 0
        n = min(args.frames, len(feats) - start)
        # the U-Net's inputs: real template frames and features (random inputs
        # wander into slow denormal arithmetic on some runtimes)
        first = stf.Engine(unet, sessions=1)
        prepared = first.prepare(
            [(tpl, start + k) for k in range(4)], stf.feature_windows(feats, start=start, stop=start + 4)
        )
        image, audio = prepared.images[:4], prepared.audio
        pipes = {c: stf.Pipeline(unet, runtime=c[0], precision=c[1]) for c in candidates()}
        measured: dict = {c: {} for c in pipes}
        frames: dict = {}
        for round_ in range(args.rounds):  # interleaved, so a noisy neighbour hits every candidate alike
            for (runtime, precision), pipe in pipes.items():
                m = measured[(runtime, precision)]
                m.setdefault("unet_ms_sessions", []).append(
                    unet_ms(pipe.engine, "throughput", image, audio, args.frames)
                )
                m.setdefault("unet_ms_single", []).append(unet_ms(pipe.engine, "latency", image, audio, args.frames))
                if runtime == "openvino":
                    m.setdefault("unet_ms_ov_streams", []).append(
                        openvino_streams_ms(unet, precision, image, audio, args.frames)
                    )
                if round_ == 0:
                    sink = stf.sinks.MemorySink()
                    pipe.generate(
                        features=feats[start : start + n], template=tpl, output=sink, start=start, progress=False
                    )
                    frames[(runtime, precision)] = sink.frames
                t0 = time.perf_counter()
                pipe.generate(
                    features=feats[start : start + n],
                    template=tpl,
                    output=work / "out.mp4",
                    start=start,
                    progress=False,
                )
                m.setdefault("mp4_fps", []).append(n / (time.perf_counter() - t0))
        rows = []
        reference = frames[("onnxruntime", "fp32")]
        for (runtime, precision), m in measured.items():
            row = {"runtime": runtime, "precision": precision, **{k: float(np.median(v)) for k, v in m.items()}}
            if have_data and (runtime, precision) != ("onnxruntime", "fp32"):
                row["mouth"] = fidelity(
                    reference, frames[(runtime, precision)], boxes=[tpl.box(start + k) for k in range(n)]
                )
            rows.append(row)
            print(json.dumps(row, default=lambda v: round(v, 2)), flush=True)
    base = rows[0]
    print(f"\n{machine}; {'face U-Net, real frames' if have_data else 'random weights'}; {n} frames")
    print(
        "| runtime | precision | U-Net ms/frame (per-core sessions) | one session | OV streams | MP4 fps | "
        "vs ORT fp32 | mouth PSNR | max / mean levels |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r.get("mouth")
        print(
            f"| {r['runtime']} | {r['precision']} | {r['unet_ms_sessions']:.1f} | {r['unet_ms_single']:.1f} | "
            f"{r.get('unet_ms_ov_streams', float('nan')):.1f} | {r['mp4_fps']:.1f} | "
            f"{base['unet_ms_sessions'] / r['unet_ms_sessions']:.2f}x | "
            f"{m['psnr']:.1f} dB | {m['max']} / {m['mean']:.2f} |"
            if m
            else f"| {r['runtime']} | {r['precision']} | {r['unet_ms_sessions']:.1f} | {r['unet_ms_single']:.1f} | "
            f"{r.get('unet_ms_ov_streams', float('nan')):.1f} | {r['mp4_fps']:.1f} | "
            f"{base['unet_ms_sessions'] / r['unet_ms_sessions']:.2f}x | - | - |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
