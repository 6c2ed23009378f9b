"""The demo shows a face speaking: the shipped demo U-Net opens the drawn mouth with the speech it hears."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from synctalk_fast import Pipeline, load_landmarks, models
from synctalk_fast.demo import (
    DEMO_SPEECH_SEED,
    DEMO_UNET,
    draw_face,
    frame_loudness,
    mouth_darkness,
    synthetic_speech,
    synthetic_template,
)
from synctalk_fast.frames import clip_box, crop_box
from synctalk_fast.template import ping_pong

TEMPLATE_FRAMES = 50  # synthetic_template's default, what `synctalk-fast demo` draws


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo's own case through the ordinary pipeline: frames, their template frames and landmarks, the speech."""
    tmp = tmp_path_factory.mktemp("demo")
    encoder = models.demo_audio_encoder(tmp / "audio_encoder.onnx")
    template = synthetic_template(tmp / "template")
    speech = synthetic_speech(4.0, seed=DEMO_SPEECH_SEED)
    pipe = Pipeline(unet=DEMO_UNET, audio_encoder=encoder)
    frames = list(pipe.frames(pipe.audio_features(speech), template))
    order = ping_pong(TEMPLATE_FRAMES, len(frames))
    images = [cv2.imread(str(template / "full_body_img" / f"{k}.jpg")) for k in order]
    landmarks = [load_landmarks(template / "landmarks" / f"{k}.lms") for k in order]
    return frames, images, landmarks, order, speech


def test_the_mouth_follows_the_loudness_of_speech(demo_run):
    frames, _, landmarks, _, speech = demo_run
    loudness = frame_loudness(speech, len(frames))
    darkness = np.array([mouth_darkness(f, pts) for f, pts in zip(frames, landmarks)])
    r = np.corrcoef(darkness, loudness)[0, 1]
    # Chance: |r| of 100 frames against unrelated loudness is below 0.3 (about 3 sigma).
    assert r > 0.6, f"mouth opening vs loudness correlation {r:.3f}"
    # It really opens and closes: wide in loud frames, shut in the pauses.
    assert darkness[loudness > 0.7].mean() > 4 * max(darkness[loudness < 0.1].mean(), 1e-3)


def test_the_face_outside_the_mouth_stays_the_template(demo_run):
    frames, images, landmarks, order, _ = demo_run
    for frame, image, pts, k in list(zip(frames, images, landmarks, order))[::7]:
        x0, y0, x1, y1 = clip_box(crop_box(pts), frame_shape=image.shape)
        outside = np.ones(image.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(frame[outside], image[outside])  # the hard paste touches only the box
        # Inside the box, away from where the drawn mouth can move: close to the template.
        shut, _ = draw_face(int(k), frames=TEMPLATE_FRAMES, width=image.shape[1], height=image.shape[0], mouth=0.0)
        wide, _ = draw_face(int(k), frames=TEMPLATE_FRAMES, width=image.shape[1], height=image.shape[0], mouth=1.0)
        mouth = cv2.dilate((np.abs(wide.astype(int) - shut).max(axis=2) > 0).astype(np.uint8), np.ones((15, 15)))
        face = ~outside & (mouth == 0)
        diff = np.abs(frame[face].astype(int) - image[face])
        psnr = 10 * np.log10(255**2 / np.mean(diff.astype(float) ** 2))
        # The shipped network measures about 28.5 dB and 4 levels here (a random-weight U-Net: about 10 dB).
        assert psnr > 26, f"template frame {k}: PSNR {psnr:.1f} dB outside the mouth"
        assert diff.mean() < 6, f"template frame {k}: mean difference {diff.mean():.2f} levels outside the mouth"


def test_the_shipped_weights_say_how_they_were_made():
    provenance = json.loads((DEMO_UNET.parent / "PROVENANCE.json").read_text())
    assert provenance["command"].split()[1] == "tools/train_demo_unet.py"
    assert {"torch", "onnxruntime", "synctalk_fast"} <= provenance["versions"].keys()
    assert provenance["arguments"]["seed"] == 0
    assert DEMO_UNET.stat().st_size < 16e6
