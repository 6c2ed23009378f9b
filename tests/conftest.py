from __future__ import annotations

import sys
from pathlib import Path

import cv2
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import helpers, reference

from synctalk_fast import _backend  # noqa: E402

AVAILABLE = _backend.available()


@pytest.fixture(params=AVAILABLE)
def backend(request, monkeypatch):
    """Run the test once per importable backend, through the public API."""
    monkeypatch.setattr(_backend, "kernels", _backend.load(request.param))
    monkeypatch.setattr(_backend, "name", request.param)
    return request.param


@pytest.fixture
def scalar_cv2():
    """OpenCV's generic (scalar) code paths, which the kernels reproduce exactly."""
    previous = cv2.useOptimized()
    cv2.setUseOptimized(False)
    yield
    cv2.setUseOptimized(previous)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Demo U-Net (ave) and audio encoder with fixed random weights."""
    from synctalk_fast import models

    folder = tmp_path_factory.mktemp("models")
    for kind, name in (("unet", "unet_328.onnx"), ("audio_encoder", "audio_encoder.onnx")):
        models.export_onnx(models.random_state_dict(kind), folder / name, kind=kind)
    return folder


@pytest.fixture(scope="session")
def make_template(tmp_path_factory):
    """Factory of synthetic template folders (a drawn face, 320 x 240 by
    default), made once per distinct set of arguments in the session:
    ``make_template(frames=12, width=320, height=240, seed=0) -> Path``."""
    from synctalk_fast.demo import synthetic_template

    made: dict[tuple, Path] = {}

    def make(frames: int = 12, width: int = 320, height: int = 240, seed: int = 0) -> Path:
        key = (frames, width, height, seed)
        if key not in made:
            folder = tmp_path_factory.mktemp("tpl") / f"person_{frames}_{width}x{height}_{seed}"
            made[key] = synthetic_template(folder, frames=frames, width=width, height=height, seed=seed)
        return made[key]

    return make


@pytest.fixture(scope="session")
def template_dir(make_template):
    """The common synthetic template: 12 frames of 320 x 240."""
    return make_template()
