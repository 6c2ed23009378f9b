"""Kernel micro-benchmark: C++ vs numba vs the librosa / cv2+numpy paths.

    python bench/bench_kernels.py [--seconds 60] [--repeat 7]

Mel of 60 s of speech (the shared test speech, tiled; synthetic speech-like
noise when the data is absent) and prepare_input + paste_back of one real
template frame. Every figure is the median of ``--repeat`` runs taken in this
one process; compare ratios, not absolute times (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import synctalk_fast as stf
from synctalk_fast import _backend

DATA = Path(os.environ.get("SYNCTALK_FAST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up: plans, JIT, caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speech(seconds: float) -> np.ndarray:
    path = DATA / "audio" / "talk_hb.wav"
    n = int(seconds * 16000)
    if path.is_file():
        wav = stf.load_audio(path)
    else:
        rng = np.random.default_rng(0)
        wav = (rng.standard_normal(n) * np.abs(np.sin(np.arange(n) / 1600))).astype(np.float32) * 0.2
    return np.resize(wav, n).astype(np.float32)


def librosa_mel(wav: np.ndarray) -> np.ndarray:
    """The reference's audio path (scipy lfilter + librosa STFT + mel, float64)."""
    import librosa
    import scipy.signal

    y = scipy.signal.lfilter([1, -0.97], [1], wav)
    D = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    S = 20 * np.log10(np.maximum(1e-5, np.dot(basis, np.abs(D)))) - 20
    return np.clip(8 * ((S + 100) / 100) - 4, -4, 4)


def frame_and_box():
    img_path, lms_path = DATA / "sanders" / "full_body_img" / "0.jpg", DATA / "sanders" / "landmarks" / "0.lms"
    if img_path.is_file():
        img = cv2.imread(str(img_path))
        return img, stf.crop_box(stf.load_landmarks(lms_path), frame_shape=img.shape)
    img = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    return img, (532, 210, 714, 392)


def cv2_numpy_frame(img, box, pred):
    """numerics §3 written with cv2 + numpy, the way the reference and the Go ports do it."""
    x0, y0, x1, y1 = box
    crop = cv2.resize(img[y0:y1, x0:x1], (328, 328), interpolation=cv2.INTER_CUBIC)
    real = crop[4:324, 4:324].copy()
    masked = cv2.rectangle(real.copy(), (5, 5, 310, 305), (0, 0, 0), -1)
    inp = np.concatenate([real.transpose(2, 0, 1), masked.transpose(2, 0, 1)]).astype(np.float32) / 255.0
    crop[4:324, 4:324] = np.array(pred.transpose(1, 2, 0) * 255, dtype=np.uint8)
    out = img.copy()
    out[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    return inp, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length for the mel (default 60)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per row (median reported)")
    args = ap.parse_args(argv)

    wav = speech(args.seconds)
    img, box = frame_and_box()
    pred = np.random.default_rng(1).random((3, 320, 320), dtype=np.float32)
    x0, y0, x1, y1 = box
    backends = _backend.available()

    rows = []  # (task, implementation, seconds)
    try:
        rows.append(("mel", "librosa reference", median_time(lambda: librosa_mel(wav), args.repeat)))
    except ImportError:
        print("librosa not installed: no reference row for the mel", file=sys.stderr)
    for name in backends:
        k = _backend.load(name)
        rows.append(("mel", f"{name} backend", median_time(lambda k=k: k.mel_spectrogram(wav, 0), args.repeat)))
        if name == "cpp":
            rows.append(
                ("mel", "cpp backend, 1 thread", median_time(lambda k=k: k.mel_spectrogram(wav, 1), args.repeat))
            )

    frame_repeat = args.repeat * 30
    rows.append(
        (
            "prepare+paste",
            "cv2+numpy (numerics §3 as written)",
            median_time(lambda: cv2_numpy_frame(img, box, pred), frame_repeat),
        )
    )
    for name in backends:
        k = _backend.load(name)
        out = np.empty((6, 320, 320), np.float32)
        canvas = img.copy()

        def fused(k=k, out=out, canvas=canvas):
            k.prepare_input(img, x0, y0, x1, y1, out)
            np.copyto(canvas, img)  # paste_back returns a new frame; same copy as the cv2 path
            k.paste_back(canvas, x0, y0, x1, y1, pred, 0)

        rows.append(("prepare+paste", f"{name} backend", median_time(fused, frame_repeat)))

    first = {}  # the first row of each task is its baseline
    for task, _, t in rows:
        first.setdefault(task, t)
    print(
        f"synctalk_fast {stf.__version__}; backends {', '.join(backends)}; {os.cpu_count()} CPUs; "
        f"mel of {args.seconds:g} s audio, frame box {x1 - x0}x{y1 - y0}"
    )
    print(f"{'task':<15}{'implementation':<34}{'time':>12}{'speed-up':>10}")
    for task, impl, t in rows:
        unit = f"{t * 1e3:9.2f} ms"
        print(f"{task:<15}{impl:<34}{unit:>12}{first[task] / t:>9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
