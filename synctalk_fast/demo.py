"""Synthetic inputs for the demo: a drawn talking-head template and speech-like audio.

Nothing here is real data: the face is a few ellipses, the "speech" is a
buzz with formant-like resonances and pauses. They let a newcomer run the
whole pipeline with nothing but ``pip install``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["synthetic_template", "synthetic_speech"]

_LMS_POINTS = 110


def synthetic_template(
    folder: str | os.PathLike, *, frames: int = 50, width: int = 640, height: int = 480, seed: int = 0
) -> Path:
    """Write a template of a drawn face that sways a little.

    ``folder/full_body_img/k.jpg`` and ``folder/landmarks/k.lms`` (110 points;
    points 1, 31 and 52 place the mouth box as real landmarks do: left, right,
    and top of a square around the lower face).
    """
    folder = Path(folder)
    (folder / "full_body_img").mkdir(parents=True, exist_ok=True)
    (folder / "landmarks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([60 + 40 * yy / height, 80 + 30 * xx / width, 110 + 20 * np.sin(xx / 50.0)], axis=2)
    for k in range(frames):
        t = k / max(frames - 1, 1)
        cx = width / 2 + 12 * np.sin(2 * np.pi * t) + rng.normal(0, 0.5)
        cy = height / 2 + 6 * np.sin(4 * np.pi * t) + rng.normal(0, 0.5)
        face_w, face_h = width * 0.22, height * 0.38
        img = background.copy().astype(np.uint8)
        cv2.ellipse(img, (int(cx), int(cy)), (int(face_w), int(face_h)), 0, 0, 360, (120, 160, 215), -1, cv2.LINE_AA)
        for dx in (-0.4, 0.4):  # eyes
            cv2.ellipse(
                img,
                (int(cx + dx * face_w), int(cy - 0.25 * face_h)),
                (int(0.12 * face_w), int(0.06 * face_h)),
                0,
                0,
                360,
                (40, 40, 40),
                -1,
                cv2.LINE_AA,
            )
        cv2.line(
            img, (int(cx), int(cy - 0.1 * face_h)), (int(cx), int(cy + 0.12 * face_h)), (90, 120, 170), 3, cv2.LINE_AA
        )
        mouth_open = 0.03 + 0.04 * abs(np.sin(6 * np.pi * t))
        cv2.ellipse(
            img,
            (int(cx), int(cy + 0.45 * face_h)),
            (int(0.3 * face_w), int(mouth_open * face_h * 2)),
            0,
            0,
            360,
            (50, 40, 150),
            -1,
            cv2.LINE_AA,
        )
        cv2.imwrite(str(folder / "full_body_img" / f"{k}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        # 110 points on the face outline; 1 and 31 at the cheeks (box left/right),
        # 52 just below the nose (box top): a square over mouth and chin.
        angles = np.linspace(0, 2 * np.pi, _LMS_POINTS, endpoint=False)
        pts = np.stack([cx + face_w * 0.9 * np.cos(angles), cy + face_h * 0.9 * np.sin(angles)], axis=1)
        pts[1] = (cx - 0.7 * face_w, cy + 0.2 * face_h)
        pts[31] = (cx + 0.7 * face_w, cy + 0.2 * face_h)
        pts[52] = (cx, cy + 0.05 * face_h)
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
