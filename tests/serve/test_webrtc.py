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

from synctalk_fast.serve.webrtc import VoiceGate  # noqa: E402


def run_check(*args: str, timeout: float = 180) -> dict:
    """webrtc_check.py in a network namespace with only loopback; its JSON line."""
    script = Path(__file__).with_name("webrtc_check.py")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_loopback_namespace
@pytest.mark.slow
def test_a_peer_speaks_and_gets_the_avatar_back(tmp_path, model_dir, template_dir):
    result = run_check("talk", str(tmp_path), str(model_dir), str(template_dir), "4.0")
    assert result["sizes"] == [[320, 240]]
    assert result["video_frames"] >= 20 and result["fps"] <= 30, result  # paced, never faster than the frame rate
    assert result["lipsync_frames"] > 0, result  # speech frames, not only idle ones
    assert result["audio_frames"] == 5
    assert (result["second_offer_status"], result["second_offer_code"]) == (503, "server_full")
    assert result["interrupts"] == 1
    assert result["active_after"] == 0


@needs_loopback_namespace
@pytest.mark.slow
def test_webrtc_sessions_apply_the_servers_limits(tmp_path, model_dir, template_dir):
    """The bug: WebRTC sessions ignored the idle time and the audio rate limit. A peer whose
    microphone says nothing is ended after idle_seconds; one faster than max_audio_rate is ended
    and told why over its data channel; each releases its seat (max_clients=1: the second is admitted)."""
    result = run_check("limits", str(tmp_path), str(model_dir), str(template_dir))
    idle, rate = result["idle"], result["rate"]
    assert idle["ended"] and idle["refusal"] == "idle_timeout" and 2.0 <= idle["seconds"] < 15, idle
    assert idle["sessions_left"] == 0
    assert rate["ended"] and rate["refusal"] == "rate_limited" and rate["seconds"] < 15, rate
    assert rate["told"] == ["rate_limited"] and rate["sessions_left"] == 0
    assert result["outcomes"] == {"admitted": 2.0, "idle_timeout": 1.0, "rate_limited": 1.0}
    assert result["active_after"] == 0


def test_the_voice_gate_splits_utterances_with_preroll():
    rate = 16000
    gate = VoiceGate(rate)
    assert gate.sample_rate == rate
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


def test_the_voice_gate_keeps_its_former_keyword():
    with pytest.warns(DeprecationWarning, match="sample_rate"):
        gate = VoiceGate(rate=8000)
    assert gate.sample_rate == gate.rate == 8000
