"""Fixtures of the voice-agent plug-in tests: one engine shared by every service, and what
offline generation makes of TTS-like audio (the reference the plug-ins must equal)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import synctalk_fast as stf
from synctalk_fast import feature_windows, paste_back, prepare_input
from synctalk_fast.template import ping_pong


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
    """``offline(pcm, rate, channels=1, first=0, count=None)``: the frames offline generation
    makes of int16 PCM ``pcm`` (written as a 16-bit WAV, read back by ``load_audio``), BGR uint8
    ``[H, W, 3]``, the utterance starting at stream position ``first`` of the template sweep;
    only the first ``count`` if given."""

    def frames(
        pcm: bytes, rate: int, channels: int = 1, *, first: int = 0, count: int | None = None
    ) -> list[np.ndarray]:
        path = tmp_path / f"speech_{rate}_{channels}_{len(pcm)}_{first}.wav"
        sf.write(path, np.frombuffer(pcm, "<i2").reshape(-1, channels), rate, subtype="PCM_16")
        feats = pipe.audio_features(path)
        if count is not None:  # frame i reads feature rows i - 8 .. i + 7 (numerics §1.9): the rest is not needed
            feats = feats[: count + 8]
        if first == 0:
            return list(pipe.frames(feats, tpl))[:count]
        out = []  # the U-Net step one frame at a time, the sweep continued (numerics §2, §3)
        for i in range(feats.shape[0]):
            k = int(ping_pong(len(tpl), 1, first=first + i)[0])
            frame, box = tpl.frame(k), tpl.box(k)
            window = feature_windows(feats, start=i, stop=i + 1)
            out.append(paste_back(frame, box, pipe.unet.run(image=prepare_input(frame, box)[None], audio=window)[0]))
        return out[:count]

    return frames
