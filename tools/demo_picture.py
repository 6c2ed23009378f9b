"""The README's picture: a frame of ``synctalk-fast demo`` beside its template frame.

    python tools/demo_picture.py --out docs/_static/demo.png

Renders the demo's own case (its template, its speech, the shipped demo
U-Net) through the ordinary pipeline, picks the frame whose mouth is widest,
and writes the template frame (left) beside the rendered frame (right),
both cut to the face, with the measured mouth-opening/loudness correlation
printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from synctalk_fast import Pipeline, load_landmarks, models
from synctalk_fast.demo import (
    DEMO_ENCODER_SEED,
    DEMO_SPEECH_SEED,
    DEMO_UNET,
    frame_loudness,
    mouth_darkness,
    synthetic_speech,
    synthetic_template,
)
from synctalk_fast.template import ping_pong


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/_static/demo.png")
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        encoder = work / "audio_encoder.onnx"
        models.export_onnx(models.random_state_dict("audio_encoder", seed=DEMO_ENCODER_SEED), encoder)
        template = synthetic_template(work / "template")
        speech = synthetic_speech(args.seconds, seed=DEMO_SPEECH_SEED)
        pipe = Pipeline(unet=DEMO_UNET, audio_encoder=encoder)
        frames = list(pipe.frames(pipe.audio_features(speech), template))
        order = ping_pong(50, len(frames))
        lms = [load_landmarks(template / "landmarks" / f"{k}.lms") for k in order]
        dark = np.array([mouth_darkness(f, pts) for f, pts in zip(frames, lms)])
        r = np.corrcoef(dark, frame_loudness(speech, len(frames)))[0, 1]
        i = int(np.argmax(dark))
        before = cv2.imread(str(template / "full_body_img" / f"{order[i]}.jpg"))
    h, w = before.shape[:2]
    face = (slice(int(0.08 * h), int(0.92 * h)), slice(int(0.22 * w), int(0.78 * w)))
    gap = np.full((face[0].stop - face[0].start, 8, 3), 255, np.uint8)
    picture = np.concatenate([before[face], gap, frames[i][face]], axis=1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), picture)
    print(f"{out}: output frame {i} (template frame {order[i]}); mouth/loudness correlation r = {r:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
