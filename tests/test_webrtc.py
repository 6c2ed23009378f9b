"""WebRTC through a real aiortc peer: the microphone's speech drives the
avatar, a 25 fps video track and an audio track come back, interrupt over
the data channel, admission. Runs in a network namespace with loopback only
(unshare -n), so no ICE check can leave the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiortc")
pytest.importorskip("starlette")

from helpers import needs_loopback_namespace  # noqa: E402

from synctalk_fast.webrtc import VoiceGate  # noqa: E402


@needs_loopback_namespace
@pytest.mark.slow
def test_a_peer_speaks_and_gets_the_avatar_back(tmp_path):
    script = Path(__file__).with_name("webrtc_check.py")
    proc = subprocess.run(["unshare", "-n", sys.executable, str(script), str(tmp_path), "4.0"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["sizes"] == [[320, 240]]
    assert result["video_frames"] >= 20 and result["fps"] <= 30, result  # paced, never faster than the frame rate
    assert result["lipsync_frames"] > 0, result  # speech frames, not only idle ones
    assert result["audio_frames"] == 5
    assert (result["second_offer_status"], result["second_offer_code"]) == (503, "server_full")
    assert result["interrupts"] == 1
    assert result["active_after"] == 0


def test_the_voice_gate_splits_utterances_with_preroll():
    rate = 16000
    gate = VoiceGate(rate)
    quiet = np.zeros(320, np.float32)
    loud = np.full(320, 0.1, np.float32)
    pushed, flushes = [], 0
    for block in [quiet] * 20 + [loud] * 10 + [quiet] * 40 + [loud] * 5:
        out, flush = gate.feed(block)
        if out is not None:
            pushed.append(len(out))
        flushes += flush
    assert pushed[0] == 320 * 11  # 0.2 s of pre-roll (10 blocks) + the first loud block
    assert flushes == 1  # 0.6 s of quiet ended the first utterance
    assert gate.speaking  # the second has begun
