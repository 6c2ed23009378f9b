"""Fixtures of the voice-agent plug-in tests: one engine shared by every service, and what
offline generation makes of TTS-like audio (the reference the plug-ins must equal)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import sweep_frames

import synctalk_fast as stf


@pytest.fixture(scope="session")
def engine(model_dir):
    """The engine every service of these tests shares (one session: no layout to measure)."""
    eng = stf.Engine(model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx", sessions=1, threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def pipe(engine):
    """Offline generation on the same engine."""
    return stf.Pipeline(engine)


@pytest.fixture(scope="session")
def tpl(make_template):
    return stf.Template(make_template(frames=12, width=320, height=240))


@pytest.fixture
def offline(pipe, tpl, tmp_path):
    """``offline(pcm, rate, channels=1, first=0, count=None)``: :func:`helpers.sweep_frames` of
    that speech on the shared engine (the reference the plug-ins must equal)."""

    def frames(
        pcm: bytes, rate: int, channels: int = 1, *, first: int = 0, count: int | None = None
    ) -> list[np.ndarray]:
        path = tmp_path / f"speech_{rate}_{channels}_{len(pcm)}_{first}.wav"
        return sweep_frames(pipe, tpl, pcm, rate, path, channels=channels, first=first, count=count)

    return frames
