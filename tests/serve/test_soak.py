"""The soak under faults, one minute (bench/soak.py runs it for ten): a well-behaved client talks
to a server in a process of its own while fault clients disconnect mid-utterance, interrupt at
random, send malformed and oversized messages, stop reading and reconnect at once.

Pass: the well-behaved client's frames are exact (png, byte for byte against offline generation
of its utterances at their place in the template sweep) and complete; the server's memory grows
by less than 50 MB after warm-up; no thread, task or session is left once everyone has left;
a slot freed by a dropped connection admits the next client within 100 ms.

The fault clients ask ``max_lag=0`` (their frames skip the U-Net): two cores cannot run several
U-Nets at real time, and the faults are about the server's session handling.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from _server_fixtures import in_process
from helpers import sweep_frames

import synctalk_fast as stf
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.loadtest import speech_plan
from synctalk_fast.loadtest.faults import FAULTS, soak

pytest.importorskip("websockets")
pytest.importorskip("prometheus_client")

SECONDS = 60.0
GOOD_PLAN = {"length": (1.0, 2.0), "pause": (1.5, 3.0)}
SPEECH = np.round(synthetic_speech(12.0, seed=4) * 32767).astype(np.int16)


@pytest.fixture
def server3(model_dir, tpl_dir):
    """The test avatar ``ann`` in a process of its own, three clients at a time."""
    with in_process(model_dir, tpl_dir, max_clients=3) as running:
        yield running


@pytest.mark.slow
def test_a_minute_under_faults(server3, model_dir, tpl_dir, tmp_path):
    result = soak(
        f"http://{server3.base}",
        avatar="ann",
        seconds=SECONDS,
        good=1,
        faulty=len(FAULTS),
        speech=SPEECH,
        fault_max_lag=0.0,
        good_plan=GOOD_PLAN,
    )
    (good,) = result.good
    assert not good.refused and good.close_code == 1000 and not good.errors
    assert good.utterances == good.flushed == good.completed >= 5
    assert good.missing == good.dropped == good.skipped == 0

    # exact: the first two utterances and the last, each at its place in the sweep
    plan = speech_plan(SPEECH, seconds=SECONDS, seed=0, **GOOD_PLAN, interrupt_share=0.0)
    by_utt: dict[int, list] = {}
    for header, image in good.images:
        by_utt.setdefault(header["utterance"], []).append((header, image))
    assert sorted(by_utt) == list(range(len(plan)))
    pipe = stf.Pipeline(model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx")
    tpl = stf.Template(tpl_dir)
    for u in (0, 1, len(plan) - 1):
        frames = by_utt[u]
        want = sweep_frames(
            pipe, tpl, plan[u].samples.tobytes(), 16000, tmp_path / f"u{u}.wav", first=frames[0][0]["index"]
        )
        assert len(frames) == len(want)
        for (_, png), w in zip(frames, want):
            np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), w)

    # every misbehaviour ran, and the oversized message was refused as such
    assert sorted(f["name"] for f in result.faults) == sorted(FAULTS)
    assert all(f["rounds"] >= 1 for f in result.faults)
    oversized = next(f for f in result.faults if f["name"] == "malformed_then_oversized")
    assert oversized["closes"].get(1009, 0) >= 1

    srv = result.server
    assert srv["rss_growth"] < 50 * 2**20, f"RSS grew {srv['rss_growth'] / 2**20:.1f} MiB after warm-up"
    assert srv["sessions"] == 0
    # threads: the idle server's, plus pools that are bounded whatever the number of sessions: the
    # engine's two U-Net workers, the image pool (max(2, cores)) and the event loop's default
    # executor (min(32, cores + 4)). Hundreds of sessions came and went: one thread each would show.
    cores = os.cpu_count() or 1
    assert sum(f["rounds"] for f in result.faults) >= 50
    assert srv["threads"] <= srv["threads_start"] + 2 + max(2, cores) + min(32, cores + 4), srv
    assert srv["tasks"] <= srv["tasks_start"], srv
    assert srv["slot_free_seconds"] < 0.1, srv
