"""Paths of the shared test data and small helpers for the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SYNCTALK_FAST_DATA", ROOT.parent / "shared" / "data"))
TEMPLATE = DATA / "sanders"
SPEECH = DATA / "audio" / "talk_hb.wav"

needs_data = pytest.mark.skipif(not (TEMPLATE / "full_body_img" / "0.jpg").is_file(), reason=f"no test data at {DATA}")


def _can_unshare() -> bool:
    ip = shutil.which("ip") or "/sbin/ip"
    return (
        shutil.which("unshare") is not None
        and os.path.exists(ip)
        and subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    )


#: Tests that run servers binding every interface (Ray, WebRTC's ICE) in a
#: network namespace with only loopback (``unshare -n``; ``ip`` brings it up).
needs_loopback_namespace = pytest.mark.skipif(
    not _can_unshare(), reason="needs unshare -n (a loopback-only network namespace) and ip"
)


def read_template_frame(k: int) -> tuple[np.ndarray, np.ndarray]:
    from synctalk_fast import load_landmarks

    img = cv2.imread(str(TEMPLATE / "full_body_img" / f"{k}.jpg"))
    return img, load_landmarks(TEMPLATE / "landmarks" / f"{k}.lms")


MANIFEST = DATA.parent / "state_dict_manifest.json"
needs_manifest = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"no manifest at {MANIFEST}")


def sweep_frames(pipe, tpl, pcm: bytes, rate: int, path: Path, *, channels: int = 1, first: int = 0, count=None):
    """What offline generation makes of int16 PCM ``pcm`` (written to ``path`` as a 16-bit WAV,
    read back by ``load_audio``), BGR uint8 ``[H, W, 3]``, the utterance starting at position
    ``first`` of the template sweep (a stream's later utterances: numerics §2, §3); only the
    first ``count`` if given. ``pipe`` is a :class:`~synctalk_fast.Pipeline`, ``tpl`` a Template."""
    import soundfile as sf

    from synctalk_fast import feature_windows, paste_back, prepare_input
    from synctalk_fast.template import ping_pong

    sf.write(path, np.frombuffer(pcm, "<i2").reshape(-1, channels), rate, subtype="PCM_16")
    feats = pipe.audio_features(path)
    if count is not None:  # frame i reads feature rows i - 8 .. i + 7 (numerics §1.9): the rest is not needed
        feats = feats[: count + 8]
    if first == 0:
        return list(pipe.frames(feats, tpl))[:count]
    out = []  # the U-Net step one frame at a time, the sweep continued
    for i in range(feats.shape[0]):
        k = int(ping_pong(len(tpl), 1, first=first + i)[0])
        frame, box = tpl.frame(k), tpl.box(k)
        window = feature_windows(feats, start=i, stop=i + 1)
        out.append(paste_back(frame, box, pipe.unet.run(image=prepare_input(frame, box)[None], audio=window)[0]))
    return out[:count]
