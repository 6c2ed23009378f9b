"""What the serving benchmarks run on: the shared face U-Net, template and speech when the
shared data is there, else random weights, a synthetic 1280x720 template and synthetic speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synctalk_fast import load_audio, models
from synctalk_fast.demo import synthetic_speech, synthetic_template


def material(data: Path, work: Path) -> tuple[Path, Path, Path, np.ndarray, str]:
    """``(template, unet.onnx, audio_encoder.onnx, speech, description)``: speech float32 at 16 kHz;
    the encoder is the demo's (fixed random weights)."""
    face, template, talk = data / "models" / "face_unet.pth", data / "sanders", data / "audio" / "talk_hb.wav"
    if face.is_file() and (template / "landmarks").is_dir() and talk.is_file():
        models.export_onnx(models.load_state_dict(face), work / "unet.onnx")
        speech, what = load_audio(talk), "the face U-Net, the shared template and speech"
    else:
        models.export_onnx(models.random_state_dict("unet", seed=0), work / "unet.onnx", kind="unet")
        template = synthetic_template(work / "tpl", frames=100, width=1280, height=720)
        speech, what = synthetic_speech(30.0), "random weights, a synthetic template and speech"
    return template, work / "unet.onnx", models.demo_audio_encoder(work / "enc.onnx"), speech, what
