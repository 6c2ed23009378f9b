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
