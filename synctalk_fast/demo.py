"""The demo: a drawn talking-head template, speech-like audio, and the U-Net that makes the face speak.

Nothing here is real data: the face is a few ellipses, the "speech" is a
buzz with formant-like resonances and pauses. The demo U-Net
(:data:`DEMO_UNET`) was trained on such faces whose drawn mouth opens with
the loudness of the speech (:func:`frame_loudness`), hearing that speech
through the demo's audio encoder (fixed random weights,
:data:`DEMO_ENCODER_SEED`); so ``synctalk-fast demo`` shows the whole
pipeline making a face speak with nothing but ``pip install``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .frames import clip_box, crop_box

__all__ = [
    "synthetic_template",
    "synthetic_speech",
    "draw_face",
    "frame_loudness",
    "mouth_darkness",
    "DEMO_UNET",
    "DEMO_ENCODER_SEED",
    "DEMO_SPEECH_SEED",
]

_LMS_POINTS = 110

#: The demo's U-Net (int8 ONNX, mode ave), trained by ``tools/train_demo_unet.py``
#: on drawn faces whose mouth opens with the loudness of speech; how it was made
#: is in ``PROVENANCE.json`` beside it.
DEMO_UNET = Path(__file__).parent / "demo_model" / "unet_int8.onnx"
#: The seed of the demo's audio encoder (fixed random weights): the features the demo U-Net learned from.
DEMO_ENCODER_SEED = 0
#: The seed of the demo's speech; training used other seeds, so the demo speaks words the network never heard.
DEMO_SPEECH_SEED = 0


def frame_loudness(audio: np.ndarray, frames: int, *, sample_rate: int = 16000, fps: float = 25.0) -> np.ndarray:
    """Loudness of speech at each video frame: float64 ``[frames]`` in 0..1.

    The RMS of the 80 ms of ``audio`` (float ``[n]``) starting at each
    frame's time ``k / fps``, in dB from -45 to -15 dBFS mapped onto 0..1.
    The demo's mouth opening: the training template draws it, and the demo
    test correlates the rendered mouth with it.
    """
    audio = np.asarray(audio, dtype=np.float64)
    span = int(0.08 * sample_rate)
    out = np.zeros(frames)
    for k in range(frames):
        start = int(round(k * sample_rate / fps))
        piece = audio[start : start + span]
        rms = np.sqrt(np.mean(piece**2)) if piece.size else 0.0
        out[k] = (20 * np.log10(max(rms, 1e-6)) + 45) / 30
    return np.clip(out, 0.0, 1.0)


def draw_face(
    k: int, *, frames: int, width: int, height: int, mouth: float = 0.0, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``k`` of a drawn face that sways a little, its mouth open by ``mouth`` (0 closed .. 1 wide).

    Returns the BGR uint8 ``[height, width, 3]`` image and its 110 landmarks
    float64 ``[110, 2]``: points 1 and 31 at the cheeks (the crop box's left
    and right), 52 just below the nose (its top), as real landmarks place a
    square over mouth and chin.
    """
    t = k / max(frames - 1, 1)
    jitter = rng.normal(0, 0.5, 2) if rng is not None else np.zeros(2)
    cx = width / 2 + 12 * np.sin(2 * np.pi * t) + jitter[0]
    cy = height / 2 + 6 * np.sin(4 * np.pi * t) + jitter[1]
    face_w, face_h = width * 0.22, height * 0.38
    img = _background(width, height).copy()
    cv2.ellipse(img, (int(cx), int(cy)), (int(face_w), int(face_h)), 0, 0, 360, (120, 160, 215), -1, cv2.LINE_AA)
    for dx in (-0.4, 0.4):  # eyes
        centre = (int(cx + dx * face_w), int(cy - 0.25 * face_h))
        cv2.ellipse(img, centre, (int(0.12 * face_w), int(0.06 * face_h)), 0, 0, 360, (40, 40, 40), -1, cv2.LINE_AA)
    nose = ((int(cx), int(cy - 0.1 * face_h)), (int(cx), int(cy + 0.12 * face_h)))
    cv2.line(img, *nose, (90, 120, 170), 3, cv2.LINE_AA)
    # Lips: a red ellipse; the open mouth a dark one inside it, as tall as the opening.
    centre = (int(cx), int(cy + 0.42 * face_h))
    half_w = int(0.3 * face_w)
    cv2.ellipse(img, centre, (half_w, int((0.035 + 0.11 * mouth) * face_h)), 0, 0, 360, (60, 50, 170), -1, cv2.LINE_AA)
    if mouth > 0.02:
        inner = (int(0.8 * half_w), max(1, int(0.1 * mouth * face_h)))
        cv2.ellipse(img, centre, inner, 0, 0, 360, (25, 15, 35), -1, cv2.LINE_AA)
    else:
        cv2.line(img, (centre[0] - half_w + 4, centre[1]), (centre[0] + half_w - 4, centre[1]), (40, 30, 90), 2)
    angles = np.linspace(0, 2 * np.pi, _LMS_POINTS, endpoint=False)
    pts = np.stack([cx + face_w * 0.9 * np.cos(angles), cy + face_h * 0.9 * np.sin(angles)], axis=1)
    pts[1] = (cx - 0.7 * face_w, cy + 0.2 * face_h)
    pts[31] = (cx + 0.7 * face_w, cy + 0.2 * face_h)
    pts[52] = (cx, cy + 0.05 * face_h)
    return img, pts


@functools.lru_cache(maxsize=4)
def _background(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([60 + 40 * yy / height, 80 + 30 * xx / width, 110 + 20 * np.sin(xx / 50.0)], axis=2)
    return background.astype(np.uint8)


def synthetic_template(
    folder: str | os.PathLike,
    *,
    frames: int = 50,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    mouth: Sequence[float] | None = None,
) -> Path:
    """Write a template of a drawn face that sways a little (:func:`draw_face`).

    ``folder/full_body_img/k.jpg`` and ``folder/landmarks/k.lms`` (110
    points). ``mouth``: the opening of each frame (0..1, ``frames`` values;
    default closed throughout).
    """
    folder = Path(folder)
    (folder / "full_body_img").mkdir(parents=True, exist_ok=True)
    (folder / "landmarks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(frames):
        opening = float(mouth[k]) if mouth is not None else 0.0
        img, pts = draw_face(k, frames=frames, width=width, height=height, mouth=opening, rng=rng)
        cv2.imwrite(str(folder / "full_body_img" / f"{k}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        np.savetxt(folder / "landmarks" / f"{k}.lms", pts, fmt="%.2f")
    return folder


def synthetic_speech(seconds: float = 4.0, *, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-like audio: voiced syllables (a glottal buzz through three
    formant resonances that move) separated by short pauses. float32 ``[n]``
    in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    buzz = sum(np.sin(h * phase) / h for h in range(1, 30))
    out = np.zeros(n)
    for f_start, f_end in ((500, 800), (1500, 1100), (2600, 2400)):  # three formants moving
        formant = np.linspace(f_start, f_end, n) * (1 + 0.15 * np.sin(2 * np.pi * 3 * t))
        out += np.sin(2 * np.pi * np.cumsum(formant) / sample_rate) * buzz / 3
    envelope = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.15, 0.35) * sample_rate)
        envelope[pos : pos + length] = np.hanning(len(envelope[pos : pos + length]))
        pos += length + int(rng.uniform(0.03, 0.2) * sample_rate)
    y = out * envelope + rng.normal(0, 0.003, n)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def mouth_darkness(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """Fraction of the crop box of ``frame`` (BGR uint8 ``[H, W, 3]``) that is
    the dark of an open mouth (every channel below 70), the box placed by
    ``landmarks`` (``[110, 2]``) as the pipeline places it: how open the drawn
    face's mouth is."""
    pts = np.asarray(landmarks, dtype=np.float32).astype(np.int32)
    x0, y0, x1, y1 = clip_box(crop_box(pts), frame_shape=frame.shape)
    region = frame[y0:y1, x0:x1]
    return float((region.max(axis=2) < 70).mean()) if region.size else 0.0
