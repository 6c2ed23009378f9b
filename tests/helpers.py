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
