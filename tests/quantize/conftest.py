"""Fixtures of the int8 tests: speech and features for the synthetic template,
U-Nets exported as SyncTalk_2D users export them (opset 11, TorchScript
exporter), and the trained face U-Net where the shared data has it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import soundfile as sf

import synctalk_fast as stf
from synctalk_fast import models
from synctalk_fast.demo import synthetic_speech

sys.path.insert(0, str(Path(__file__).parent))  # the tests here import _int8_helpers

from _int8_helpers import DATA, HAVE_TRAINED, TRAINED, export_legacy_opset11  # noqa: E402


@pytest.fixture(scope="session")
def small(template_dir, model_dir, tmp_path_factory):
    """The 12-frame template, 2 s of speech and its features."""
    speech = tmp_path_factory.mktemp("quant") / "speech.wav"
    sf.write(speech, synthetic_speech(2.0), 16000, subtype="PCM_16")
    feats = stf.audio_features(speech, audio_encoder=model_dir / "audio_encoder.onnx")
    return template_dir, speech, feats


@pytest.fixture(scope="session")
def legacy_opset11(tmp_path_factory):
    """The re-statement with the demo's fixed random weights, exported at
    opset 11 by the TorchScript exporter: its ``F.interpolate`` becomes
    ``Resize`` fed an empty float ``roi`` constant and sizes computed by
    ``Shape`` / ``Slice`` / ``Cast`` / ``Concat``."""
    path = tmp_path_factory.mktemp("legacy11") / "unet_328.onnx"
    return export_legacy_opset11(models.random_state_dict("unet"), path)


@pytest.fixture(scope="module")
def opset11(tmp_path_factory):
    """The trained U-Net as SyncTalk_2D users export it (opset 11, TorchScript exporter)."""
    if not HAVE_TRAINED:
        pytest.skip(f"no trained U-Net / features / template under {DATA}")
    path = tmp_path_factory.mktemp("opset11") / "unet_328.onnx"
    return export_legacy_opset11(models.load_state_dict(TRAINED), path)


@pytest.fixture(scope="module")
def face_onnx(tmp_path_factory):
    """The trained U-Net exported by the package (opset 17)."""
    if not HAVE_TRAINED:
        pytest.skip(f"no trained U-Net / features / template under {DATA}")
    path = tmp_path_factory.mktemp("face") / "face_unet.onnx"
    models.export_onnx(models.load_state_dict(TRAINED), path)
    return path
