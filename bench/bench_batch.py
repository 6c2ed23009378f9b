"""Batch throughput: many short clips against one long clip, measured in one run.

The issue-17 target: 20 clips of 2 s on one template render at >= 0.9x the
frames/s of one 40 s clip, because a batch worker loads the networks and
checks the template once. Measured, each as a whole ``render_batch`` call
to MP4 (worker start and model loading included):

- ``one clip``: one job of ``--clips x --clip`` seconds (what one
  ``synctalk-fast generate`` does, in a worker process);
- ``local``: the clips as jobs on local worker processes (the default plan:
  one group, so one worker on every core), and with ``--two-workers`` two
  workers of one core each;
- ``ray``: the same jobs on Ray actors of a local Ray instance (started
  before the clock; its start time is printed), with ``--ray``.

Each clip starts where the previous one left the template (``start``), so
the clips walk the same template frames the long clip does.

Usage: ``python bench/bench_batch.py [--clips 20] [--clip 2] [--ray] [--rounds 2] [--data ../shared/data]``.
Ray's servers bind every interface: on a shared machine run it inside
``unshare -n`` (loopback only). The machine is named; ratios are to the
one-clip row of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

_root = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _root]  # measure the installed package

from synctalk_fast import models, render_batch  # noqa: E402
from synctalk_fast._util.system import cpu_cores, cpu_name  # noqa: E402
from synctalk_fast.demo import synthetic_speech, synthetic_template  # noqa: E402

FPS = 25


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--clip", type=float, default=2.0, help="seconds of each short clip")
    p.add_argument("--ray", action="store_true", help="also on Ray actors (a local Ray instance)")
    p.add_argument("--two-workers", action="store_true", help="also 2 workers (2 actors) of one core each")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--data", default=str(_root.parent / "shared" / "data"))
    args = p.parse_args()
    data = Path(args.data)
    machine = f"{cpu_name()}, {cpu_cores()} cores"
    print(f"machine: {machine}", flush=True)
    total = args.clips * args.clip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        face = data / "models" / "face_unet.pth"
        speech_file = data / "audio" / "talk_hb.wav"
        if face.is_file() and (data / "sanders" / "landmarks").is_dir() and speech_file.is_file():
            models.export_onnx(models.load_state_dict(face), work / "unet.onnx")
            template, (speech, rate) = data / "sanders", sf.read(speech_file, dtype="float32")
            what = "face U-Net, the shared template and speech"
        else:
            models.export_onnx(models.random_state_dict("unet", seed=0), work / "unet.onnx", kind="unet")
            template, speech, rate = synthetic_template(work / "tpl", frames=100), synthetic_speech(total), 16000
            what = "random weights, a synthetic template and speech"
        if len(speech) < total * rate:
            sys.exit(f"the speech is {len(speech) / rate:.1f} s, shorter than {total:.0f} s")
        models.export_onnx(models.random_state_dict("audio_encoder", seed=0), work / "enc.onnx", kind="audio_encoder")
        common = {
            "template": str(template),
            "unet": str(work / "unet.onnx"),
            "audio_encoder": str(work / "enc.onnx"),
            "runtime": args.runtime,
            "precision": args.precision,
        }
        sf.write(work / "long.wav", speech[: int(total * rate)], rate)
        long_job = [{**common, "audio": str(work / "long.wav"), "output": "long.mp4"}]
        short_jobs = []
        n = int(args.clip * rate)
        for k in range(args.clips):
            sf.write(work / f"clip{k}.wav", speech[k * n : (k + 1) * n], rate)
            short_jobs.append(
                {
                    **common,
                    "audio": str(work / f"clip{k}.wav"),
                    "output": f"clip{k}.mp4",
                    "start": int(round(k * args.clip * FPS)),
                }
            )

        runs: dict[str, list[dict]] = {}

        def measure(name: str, jobs: list[dict], **kw) -> None:
            t0 = time.perf_counter()
            result = render_batch(
                jobs, output_dir=work / f"{name}_{len(runs.get(name, []))}".replace(" ", "_"), progress=False, **kw
            )
            seconds = time.perf_counter() - t0
            assert result.exit_code == 0, [r.error for r in result.results if r.error]
            row = {
                "run": name,
                "jobs": len(jobs),
                "workers": result.workers,
                "frames": result.frames,
                "seconds": seconds,
                "fps": result.frames / seconds,
            }
            runs.setdefault(name, []).append(row)
            print(json.dumps(row, default=lambda v: round(v, 2)), flush=True)

        if args.ray:
            import ray

            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            t0 = time.perf_counter()
            ray.init(
                address="local",
                num_cpus=cpu_cores(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level="WARNING",
            )
            print(f"ray start: {time.perf_counter() - t0:.1f} s", flush=True)
        for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits every run alike
            measure("one clip", long_job)
            measure("local", short_jobs)
            if args.two_workers:
                measure("local, 2 workers", short_jobs, workers=2)
            if args.ray:
                measure("ray", short_jobs, ray_address="local")
                if args.two_workers:
                    measure("ray, 2 actors", short_jobs, ray_address="local", workers=2)
        if args.ray:
            ray.shutdown()
    rows = [
        {**r[0], "seconds": float(np.median([x["seconds"] for x in r])), "fps": float(np.median([x["fps"] for x in r]))}
        for r in runs.values()
    ]
    base = rows[0]["fps"]
    print(
        f"\n{machine}; {what}; {args.runtime} {args.precision}; MP4; {args.clips} x {args.clip:g} s vs one "
        f"{total:g} s clip; median of {args.rounds} interleaved rounds"
    )
    print("| run | jobs | workers | frames | seconds | frames/s | vs one clip |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['jobs']} | {r['workers']} | {r['frames']} | {r['seconds']:.1f} | {r['fps']:.1f} | "
            f"{r['fps'] / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
