"""Train the demo's U-Net: a drawn face whose mouth opens with the speech it hears.

    python tools/train_demo_unet.py --out synctalk_fast/demo_model

What it learns from: drawn templates (:func:`synctalk_fast.demo.draw_face`)
whose mouth opening follows the loudness of training utterances
(:func:`synctalk_fast.demo.synthetic_speech` with seeds 1..N, never seed 0,
which is what ``synctalk-fast demo`` speaks), and the features of those
utterances from the demo's audio encoder (fixed random weights, seed 0, as
``synctalk-fast demo`` builds it). The inputs are SyncTalk_2D's: a reference
frame's crop beside the masked crop of the target frame, and the target's
16-row window of features; the loss is L1, weighted up where the drawings
differ between frames (the mouth). So the network can only draw the mouth
right by hearing the speech.

The product's own code prepares every input (:func:`synctalk_fast.prepare_input`,
:func:`synctalk_fast.audio_features`, :func:`synctalk_fast.feature_windows`)
and exports the result (:func:`synctalk_fast.models.export_onnx`); training
uses the PyTorch re-statement of the network (``synctalk_fast.reference``,
torch from the ``test`` extra), in bfloat16 autocast and channels-last (about
4x faster than float32 on CPUs with avx512_bf16 or AMX). The fp32 model is
then quantized to int8 by :func:`synctalk_fast.quantize`, calibrated on the
demo template and a held-out utterance, and written with ``PROVENANCE.json``
(command, seed, versions, machine, losses, timings) beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FPS = 25


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_data(args, work: Path):
    """Crops (uint8 [N, 3, 320, 320] real, masked) and audio windows ([N, 32, 16, 16]) of every training frame."""
    import soundfile as sf

    import synctalk_fast as st
    from synctalk_fast import demo, models

    encoder = work / "audio_encoder.onnx"
    models.export_onnx(
        models.random_state_dict("audio_encoder", seed=demo.DEMO_ENCODER_SEED), encoder, kind="audio_encoder"
    )
    real, masked, audio, opening = [], [], [], []
    for u in range(args.utterances):
        speech = demo.synthetic_speech(args.seconds, seed=1 + u)
        wav = work / f"speech_{u}.wav"
        sf.write(wav, speech, 16000, subtype="PCM_16")
        feats = st.audio_features(wav, audio_encoder=encoder)
        windows = st.feature_windows(feats, mode="ave")
        n = len(feats)
        mouth = demo.frame_loudness(speech, n)
        rng = np.random.default_rng(100 + u)
        for k in range(n):
            img, pts = demo.draw_face(k, frames=n, width=args.width, height=args.height, mouth=mouth[k], rng=rng)
            # Round-trip through JPEG as a template on disk would be.
            img = _jpeg(img)
            box = st.crop_box(np.round(pts, 2).astype(np.float32).astype(np.int32), frame_shape=img.shape)
            x = st.prepare_input(img, box)
            real.append(np.rint(x[:3] * 255).astype(np.uint8))
            masked.append(np.rint(x[3:] * 255).astype(np.uint8))
        audio.append(windows.astype(np.float32))
        opening.append(mouth)
        log(f"utterance {u + 1}/{args.utterances}: {n} frames")
    return np.stack(real), np.stack(masked), np.concatenate(audio), np.concatenate(opening), encoder


def _jpeg(img: np.ndarray) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def loss_weights(real: np.ndarray, boost: float) -> np.ndarray:
    """1 everywhere, 1 + boost where the drawings differ between frames (the mouth): float32 [1, 1, 320, 320]."""
    spread = real[:: max(1, len(real) // 400)].astype(np.float32).std(axis=0).max(axis=0)
    import cv2

    region = cv2.dilate((spread > 12).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(np.float32)
    return (1.0 + boost * region)[None, None]


def probe_data(args, encoder: Path, work: Path):
    """The demo's own case, held out: its closed-mouth template and its utterance (seed 0)."""
    import soundfile as sf

    import synctalk_fast as st
    from synctalk_fast import demo

    speech = demo.synthetic_speech(4.0, seed=demo.DEMO_SPEECH_SEED)
    wav = work / "probe.wav"
    sf.write(wav, speech, 16000, subtype="PCM_16")
    feats = st.audio_features(wav, audio_encoder=encoder)
    windows = st.feature_windows(feats, mode="ave")
    n = len(feats)
    x = []
    for k in range(n):
        img, pts = demo.draw_face(k % 50, frames=50, width=args.width, height=args.height)
        box = st.crop_box(np.round(pts, 2), frame_shape=img.shape)
        x.append(st.prepare_input(_jpeg(img), box))
    return np.stack(x), windows.astype(np.float32), demo.frame_loudness(speech, n)


def probe(net, data) -> float:
    """Correlation of the predicted mouth's dark area with loudness on the held-out probe."""
    import torch

    x, a, loud = data
    dark = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, len(x), 8):
            out = net(torch.from_numpy(x[i : i + 8]), torch.from_numpy(a[i : i + 8])).float().numpy()
            dark.extend((out.max(axis=1) < 70 / 255).mean(axis=(1, 2)))
    dark = np.array(dark)
    return float(np.corrcoef(dark, loud)[0, 1]) if dark.std() > 0 else 0.0


def train(args, real, masked, audio, weights, probe_set=None):
    import torch

    from synctalk_fast.reference.torch_nets import UNet

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    net = UNet("ave").to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    w = torch.from_numpy(weights)
    n = len(real)
    history = []
    t0 = time.time()
    for step in range(args.steps):
        target = rng.integers(0, n, args.batch)
        ref = rng.integers(0, n, args.batch)
        x = np.concatenate([real[ref], masked[target]], axis=1).astype(np.float32) / 255.0
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        at = torch.from_numpy(audio[target])
        yt = torch.from_numpy(real[target].astype(np.float32) / 255.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(xt, at)
        loss = ((out.float() - yt).abs() * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            recent = float(np.mean(history[-args.log_every :]))
            log(f"step {step + 1}/{args.steps}  loss {recent:.4f}  ({time.time() - t0:.0f} s)")
        if probe_set is not None and ((step + 1) % args.probe_every == 0 or step + 1 == args.steps):
            log(f"step {step + 1}: held-out mouth/loudness correlation {probe(net, probe_set):.3f}")
    # BatchNorm statistics of the final weights, over many frames (eval mode then uses them).
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    with torch.no_grad():
        for _ in range(args.bn_batches):
            idx = rng.integers(0, n, args.batch)
            x = np.concatenate([real[idx], masked[idx]], axis=1).astype(np.float32) / 255.0
            net(torch.from_numpy(x), torch.from_numpy(audio[idx]))
    net.eval()
    state = {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in net.state_dict().items()}
    return state, history, time.time() - t0


def demo_check(args, unet: Path, encoder: Path, work: Path) -> dict:
    """Render the demo's own utterance (seed 0) on its own template; the mouth's dark area vs loudness."""
    import soundfile as sf

    import synctalk_fast as st
    from synctalk_fast import demo

    template = demo.synthetic_template(work / "demo_template")
    speech = demo.synthetic_speech(args.check_seconds, seed=demo.DEMO_SPEECH_SEED)
    wav = work / "demo_speech.wav"
    sf.write(wav, speech, 16000, subtype="PCM_16")
    pipe = st.Pipeline(unet=unet, audio_encoder=encoder)
    frames = list(pipe.frames(pipe.audio_features(wav), template))
    loud = demo.frame_loudness(speech, len(frames))
    dark = np.array([demo.mouth_darkness(f, pts) for f, pts in zip(frames, _template_landmarks(template, len(frames)))])
    corr = float(np.corrcoef(dark, loud)[0, 1])
    return {"frames": len(frames), "mouth_loudness_correlation": round(corr, 3)}


def _template_landmarks(template: Path, count: int) -> list[np.ndarray]:
    """The landmarks of the template frame under each output frame."""
    from synctalk_fast import load_landmarks
    from synctalk_fast.template import ping_pong

    n = len(list((template / "landmarks").glob("*.lms")))
    return [load_landmarks(template / "landmarks" / f"{int(k)}.lms") for k in ping_pong(n, count)]


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    import synctalk_fast

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "synctalk_fast": synctalk_fast.__version__,
        "git_commit": commit,
        "machine": f"{cpu}, {platform.machine()}",
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="synctalk_fast/demo_model", help="folder for unet_int8.onnx and PROVENANCE.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--utterances", type=int, default=4, help="training utterances (speech seeds 1..N)")
    p.add_argument("--seconds", type=float, default=16.0, help="length of each training utterance")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--mouth-weight", type=float, default=8.0, help="extra L1 weight where the mouth moves")
    p.add_argument("--bn-batches", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--check-seconds", type=float, default=6.0)
    p.add_argument(
        "--target-psnr",
        type=float,
        default=None,
        help="int8 fidelity asked of quantize (dB; default: every block int8)",
    )
    p.add_argument("--probe-every", type=int, default=100, help="steps between held-out checks")
    p.add_argument("--from-fp32", help="skip training: quantize and check this fp32 ONNX")
    p.add_argument("--keep-fp32", help="also write the fp32 ONNX here")
    args = p.parse_args(argv)

    import synctalk_fast as st
    from synctalk_fast import models

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        real, masked, audio, opening, encoder = build_data(args, work)
        log(f"{len(real)} training frames; mouth opening mean {opening.mean():.2f}")
        fp32 = work / "unet_fp32.onnx"
        if args.from_fp32:
            fp32.write_bytes(Path(args.from_fp32).read_bytes())
            history, train_s = [float("nan")] * 50, 0.0
        else:
            weights = loss_weights(real, args.mouth_weight)
            state, history, train_s = train(args, real, masked, audio, weights, probe_data(args, encoder, work))
            models.export_onnx(state, fp32, kind="unet", mode="ave")
        if args.keep_fp32:
            Path(args.keep_fp32).write_bytes(fp32.read_bytes())
        check_fp32 = demo_check(args, fp32, encoder, work)
        log(f"fp32: {check_fp32}")
        from synctalk_fast import demo

        calib = work / "calibration.wav"
        import soundfile as sf

        sf.write(calib, demo.synthetic_speech(8.0, seed=1000), 16000, subtype="PCM_16")
        int8 = out / "unet_int8.onnx"
        report = st.quantize(
            fp32,
            int8,
            template=demo.synthetic_template(work / "calib_template"),
            audio=calib,
            audio_encoder=encoder,
            report=work / "quantize.json",
            tool="onnxruntime",
            target_psnr=args.target_psnr,
        )
        check_int8 = demo_check(args, int8, encoder, work)
        log(f"int8: {check_int8}")
        provenance = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "arguments": vars(args),
            "versions": versions(),
            "training_frames": len(real),
            "training_seconds": round(train_s, 1),
            "total_seconds": round(time.time() - started, 1),
            "loss_first_50": round(float(np.mean(history[:50])), 4),
            "loss_last_50": round(float(np.mean(history[-50:])), 4),
            "demo_check_fp32": check_fp32,
            "demo_check_int8": check_int8,
            "quantize": json.loads((work / "quantize.json").read_text()),
            "int8_bytes": int8.stat().st_size,
        }
        (out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        del report
    log(f"wrote {int8} ({int8.stat().st_size / 1e6:.1f} MB) and PROVENANCE.json in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
