"""The Pipecat plug-in, driven by Pipecat's own test harness (``pipecat.tests.utils.run_test``).

Every test checks outcomes: the images are byte-identical to offline generation of the same
speech, the audio that leaves is the audio that came in (same rate, channels and bytes, cut per
frame by the documented rule), and frames leave in the documented order.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="the pipecat extra is not installed")

from pipecat.frames.frames import (  # noqa: E402
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection  # noqa: E402
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

import synctalk_fast as stf  # noqa: E402
from synctalk_fast.demo import synthetic_speech  # noqa: E402
from synctalk_fast.integrations.pipecat import SyncTalkVideoService  # noqa: E402
from synctalk_fast.template import ping_pong  # noqa: E402

ODD_CHUNKS = (777, 1, 4099, 1234, 333)  # samples (of every channel) per TTS chunk, cycling
RUN_TIMEOUT = 120.0  # seconds: every pipeline run is bounded


# --- helpers ----------------------------------------------------------------------------


def tts_pcm(seconds: float, rate: int, channels: int = 1, *, seed: int = 0) -> bytes:
    """Speech-like int16 little-endian PCM at ``rate``; a second channel differs from the first."""
    mono = synthetic_speech(seconds, sample_rate=rate, seed=seed)
    chans = [mono, 0.6 * mono[::-1]][:channels] + [0.5 * mono] * max(0, channels - 2)
    return np.round(np.clip(np.stack(chans, axis=1), -1, 1) * 32767).astype("<i2").tobytes()


def tts_frames(pcm: bytes, rate: int, channels: int = 1, sizes=ODD_CHUNKS) -> list[TTSAudioRawFrame]:
    """``pcm`` as the TTS would send it: chunks of ``sizes`` samples, cycling."""
    width, i, out, k = 2 * channels, 0, [], 0
    while i < len(pcm):
        n = sizes[k % len(sizes)] * width
        out.append(TTSAudioRawFrame(audio=pcm[i : i + n], sample_rate=rate, num_channels=channels))
        i, k = i + n, k + 1
    return out


def frame_bytes(k: int, rate: int, channels: int) -> int:
    """Bytes frame ``k`` (not the last) of an utterance carries: samples ``floor(k rate / 25) ..
    floor((k + 1) rate / 25)``, every channel."""
    return ((k + 1) * rate // 25 - k * rate // 25) * 2 * channels


def bgr(frame: OutputImageRawFrame) -> np.ndarray:
    width, height = frame.size
    return np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)[..., ::-1]


# The stream warms the engine up while the pipeline starts: a generous start timeout where
# run_test has one (pipecat 1.x releases before it waited for no start).
START = {"start_timeout": 60.0} if "start_timeout" in inspect.signature(run_test).parameters else {}


def run(service, frames: list[Frame], **kwargs) -> tuple[list[Frame], list[Frame]]:
    """``run_test``, bounded in time."""
    coro = run_test(service, frames_to_send=frames, **START, **kwargs)
    down, up = asyncio.run(asyncio.wait_for(coro, RUN_TIMEOUT))
    return list(down), list(up)


def texts(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, TextFrame)]


def index_of(frames: list[Frame], pred) -> int:
    return next(i for i, f in enumerate(frames) if pred(f))


def is_text(text: str):
    return lambda f: isinstance(f, TextFrame) and f.text == text


def assert_utterance(frames: list[Frame], pcm: bytes, rate: int, channels: int, want: list[np.ndarray] | None):
    """``frames`` is image, audio, image, audio, ...: the images are ``want`` (if given), the audio
    pieces are cut by the rule and join up to ``pcm``."""
    images, audio = frames[0::2], frames[1::2]
    assert all(isinstance(f, OutputImageRawFrame) for f in images)
    assert all(isinstance(f, TTSAudioRawFrame) for f in audio) and len(audio) == len(images)
    if want is not None:
        assert len(images) == len(want)
        for got, w in zip(images, want):
            assert (got.format, got.size, got.sync_with_audio) == ("RGB", (w.shape[1], w.shape[0]), True)
            np.testing.assert_array_equal(bgr(got), w)
    assert all((a.sample_rate, a.num_channels) == (rate, channels) for a in audio)
    assert [len(a.audio) for a in audio[:-1]] == [frame_bytes(k, rate, channels) for k in range(len(audio) - 1)]
    assert b"".join(a.audio for a in audio) == pcm


class PushTimes(BaseObserver):
    """``time.perf_counter()`` of each frame ``source`` pushes downstream."""

    def __init__(self, source):
        super().__init__()
        self.source = source
        self.times: dict[int, float] = {}

    async def on_push_frame(self, data: FramePushed):
        if data.source is self.source and data.direction == FrameDirection.DOWNSTREAM:
            self.times[data.frame.id] = time.perf_counter()


def feature_threads() -> int:
    return sum(t.name == "synctalk-stream-features" for t in threading.enumerate())


# --- exactness --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate, channels",
    [(24000, 1), (48000, 2), (22051, 1)],  # 22 051 Hz: 40 ms is 882.04 samples
    ids=["24k-mono", "48k-stereo", "22051-mono"],
)
def test_images_are_offline_frames_and_audio_leaves_as_it_came(engine, tpl, offline, rate, channels):
    pcm = tts_pcm(0.5, rate, channels)
    want = offline(pcm, rate, channels)
    service = SyncTalkVideoService(engine, template=tpl)
    threads = feature_threads()
    down, up = run(service, [TTSStartedFrame(), *tts_frames(pcm, rate, channels), TTSStoppedFrame()])
    assert isinstance(down[0], TTSStartedFrame) and isinstance(down[-1], TTSStoppedFrame)
    assert_utterance(down[1:-1], pcm, rate, channels, want)
    assert up == []
    assert service.stats() == {} and feature_threads() == threads  # the stream closed at EndFrame, its thread ended


def test_two_utterances_back_to_back_then_a_short_one(engine, tpl, offline):
    """The second utterance (another rate and channel count) continues the template sweep; one
    too short for a frame (under 0.19 s) is padded with silence for the stream: its frames are
    those of the padded speech, and the frames past its audio carry none."""
    a, b, c = tts_pcm(0.4, 24000), tts_pcm(0.45, 48000, 2, seed=1), tts_pcm(0.1, 24000, seed=2)
    want_a = offline(a, 24000)
    want_b = offline(b, 48000, 2, first=len(want_a))
    padded = c + bytes(2 * (4499 - len(c) // 2))  # 4499 samples at 24 kHz: 3000 at 16 kHz, one encoder window
    want_c = offline(padded, 24000, first=len(want_a) + len(want_b))
    service = SyncTalkVideoService(engine, template=tpl)
    sent = []
    for pcm, rate, ch in ((a, 24000, 1), (b, 48000, 2), (c, 24000, 1)):
        sent += [TTSStartedFrame(), *tts_frames(pcm, rate, ch), TTSStoppedFrame()]
    down, _ = run(service, sent)
    starts = [i for i, f in enumerate(down) if isinstance(f, TTSStartedFrame)]
    stops = [i for i, f in enumerate(down) if isinstance(f, TTSStoppedFrame)]
    assert starts == [0, stops[0] + 1, stops[1] + 1] and stops[2] == len(down) - 1
    assert_utterance(down[1 : stops[0]], a, 24000, 1, want_a)
    assert_utterance(down[starts[1] + 1 : stops[1]], b, 48000, 2, want_b)
    short = down[starts[2] + 1 : stops[2]]
    assert len(want_c) == 4 and [type(f) for f in short] == [OutputImageRawFrame, TTSAudioRawFrame] * 3 + [
        OutputImageRawFrame
    ]
    for got, want in zip(short[0::2], want_c):
        np.testing.assert_array_equal(bgr(got), want)
    assert [len(f.audio) for f in short[1::2]] == [1920, 1920, 960] and b"".join(f.audio for f in short[1::2]) == c


def test_two_services_share_one_engine(engine, tpl, offline):
    """Two agents in one process, one engine: both get their exact frames."""
    speech = [(tts_pcm(0.45, 24000, seed=3), 24000, 1), (tts_pcm(0.45, 48000, 2, seed=4), 48000, 2)]
    wants = [offline(pcm, rate, ch) for pcm, rate, ch in speech]
    services = [SyncTalkVideoService(engine, template=tpl, name=f"avatar{k}") for k in range(2)]

    async def both():
        runs = [
            run_test(s, frames_to_send=[TTSStartedFrame(), *tts_frames(pcm, rate, ch), TTSStoppedFrame()], **START)
            for s, (pcm, rate, ch) in zip(services, speech)
        ]
        return await asyncio.wait_for(asyncio.gather(*runs), RUN_TIMEOUT)

    for (down, _), (pcm, rate, ch), want in zip(asyncio.run(both()), speech, wants):
        down = list(down)
        assert isinstance(down[0], TTSStartedFrame) and isinstance(down[-1], TTSStoppedFrame)
        assert_utterance(down[1:-1], pcm, rate, ch, want)


# --- order --------------------------------------------------------------------------------


def test_other_frames_keep_their_place(engine, tpl):
    """A frame leaves after the audio that came before it; EndFrame ends an open utterance
    and leaves last; system and upstream frames are not held."""
    rate = 24000
    first, second = tts_pcm(0.6, rate), tts_pcm(0.4, rate, seed=5)
    cut = 2 * 7001  # "mid" comes after the first 7001 samples
    service = SyncTalkVideoService(engine, template=tpl)
    sent = [
        TextFrame("before"),
        TTSStartedFrame(),
        *tts_frames(first[:cut], rate),
        TextFrame("mid"),
        *tts_frames(first[cut:], rate),
        TTSStoppedFrame(),
        TextFrame("after"),
        TTSStartedFrame(),
        *tts_frames(second, rate),
        TextFrame("ending"),
        EndFrame(),  # no TTSStoppedFrame: the end of the pipeline ends the utterance
    ]
    down, _ = run(service, sent, send_end_frame=False)
    assert texts(down) == ["before", "mid", "after", "ending"]
    assert isinstance(down[1], TTSStartedFrame) and isinstance(down[2], OutputImageRawFrame)
    mid, stop = index_of(down, is_text("mid")), index_of(down, lambda f: isinstance(f, TTSStoppedFrame))
    audio_before_mid = [f for f in down[:mid] if isinstance(f, TTSAudioRawFrame)]
    left = sum(len(f.audio) for f in audio_before_mid)
    assert isinstance(down[mid - 1], TTSAudioRawFrame)  # right after the piece that holds its sample
    assert left >= cut > left - len(audio_before_mid[-1].audio)
    assert_utterance([f for f in down[2:stop] if not isinstance(f, TextFrame)], first, rate, 1, None)
    assert isinstance(down[stop + 1], TextFrame) and isinstance(down[stop + 2], TTSStartedFrame)
    ending = index_of(down, is_text("ending"))
    assert_utterance(down[stop + 3 : ending], second, rate, 1, None)
    assert isinstance(down[-1], EndFrame) and ending == len(down) - 2

    # system frames and upstream frames pass at once, untouched
    service = SyncTalkVideoService(engine, template=tpl)
    down, up = run(service, [UserStartedSpeakingFrame()])
    assert [type(f) for f in down] == [UserStartedSpeakingFrame]
    service = SyncTalkVideoService(engine, template=tpl)
    up_frame = TextFrame("upstream")
    # (the sleep: pipecat releases before 1.8 sent upstream frames before the pipeline had started)
    _, up = run(service, [SleepFrame(sleep=0.5), up_frame], frames_to_send_direction=FrameDirection.UPSTREAM)
    assert up == [up_frame]


# --- interruptions ---------------------------------------------------------------------------


def test_interruption_drops_the_rest_of_the_utterance(engine, tpl, offline):
    rate = 24000
    long, next_ = tts_pcm(1.2, rate, seed=6), tts_pcm(0.45, rate, seed=7)
    keep = TextFrame("uninterruptible")
    keep.interruptible = False
    service = SyncTalkVideoService(engine, template=tpl)
    sent = [
        TTSStartedFrame(),
        *tts_frames(long, rate),  # no TTSStoppedFrame: its last ~0.45 s of frames wait for the end
        TextFrame("held"),  # behind all of it: dropped with it
        keep,  # kept, and passed on after the interruption
        SleepFrame(sleep=2.5),  # frames of it are shown meanwhile
        InterruptionFrame(),
        TTSStartedFrame(),
        *tts_frames(next_, rate),
        TTSStoppedFrame(),
    ]
    down, _ = run(service, sent)
    cut = index_of(down, lambda f: isinstance(f, InterruptionFrame))
    before, after = down[1:cut], down[cut + 1 :]
    assert isinstance(down[0], TTSStartedFrame)
    shown = len(before) // 2
    assert 1 <= shown < 1.2 * 25 - 10  # interrupted mid-utterance, after some frames
    spoken = long[: sum(frame_bytes(k, rate, 1) for k in range(shown))]
    assert_utterance(before, spoken, rate, 1, offline(long, rate, count=shown))
    assert texts(down) == ["uninterruptible"] and after[0] is keep
    assert isinstance(after[1], TTSStartedFrame) and isinstance(after[-1], TTSStoppedFrame)
    # nothing of the interrupted utterance after the InterruptionFrame; the sweep goes on from `shown`
    assert_utterance(after[2:-1], next_, rate, 1, offline(next_, rate, first=shown))
    assert service.stats() == {}  # closed


def test_cancel_mid_utterance_stops_at_once(engine, tpl):
    service = SyncTalkVideoService(engine, template=tpl)
    threads = feature_threads()
    sent = [TTSStartedFrame(), *tts_frames(tts_pcm(1.0, 16000), 16000), SleepFrame(sleep=0.5), CancelFrame()]
    t0 = time.perf_counter()
    down, _ = run(service, sent, send_end_frame=False)
    assert time.perf_counter() - t0 < 30
    assert isinstance(down[-1], CancelFrame)
    assert service.stats() == {} and feature_threads() == threads  # stream closed, thread ended


# --- idle -------------------------------------------------------------------------------------


def test_idle_frames_flow_in_real_time_and_speech_continues_the_sweep(engine, tpl):
    """``max_lag=0``: speech frames are their template frames (no U-Net), so the speech takes no
    time and the frames after it are idle ones; every frame takes the next place in the sweep."""
    rate = 24000
    pcm = tts_pcm(0.4, rate, seed=8)
    service = SyncTalkVideoService(engine, template=tpl, idle=True, max_lag=0.0)
    times = PushTimes(service)
    t0 = time.perf_counter()
    down, _ = run(
        service,
        [SleepFrame(sleep=0.6), TTSStartedFrame(), *tts_frames(pcm, rate), TTSStoppedFrame(), SleepFrame(sleep=0.6)],
        observers=[times],
    )
    elapsed = time.perf_counter() - t0
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    first = index_of(images, lambda f: f.sync_with_audio)  # idle frames before the speech
    speech = [f for f in images if f.sync_with_audio]
    idle = images[:first] + images[first + len(speech) :]
    assert all(not f.sync_with_audio for f in idle)
    assert first >= 5 and len(idle) - first >= 5
    # paced: never faster than 25 frames/s, so their number is bounded by the time that passed, in
    # any stretch (a push may wait for the lock behind other frames: two frames of slack)
    for run_ in (idle[:first], idle[first:]):
        t = [times.times[f.id] for f in run_]
        assert all(t[j] - t[i] >= (j - i - 2) / 25 for i in range(len(t)) for j in range(i + 1, len(t)))
    assert len(idle) <= elapsed * 25 + 2
    # one sweep, no gap, no repeat: idle, speech, idle
    for pos, f in enumerate(images):
        np.testing.assert_array_equal(bgr(f), tpl.frame(int(ping_pong(len(tpl), 1, first=pos)[0])))
    start = index_of(down, lambda f: isinstance(f, TTSStartedFrame))
    stop = index_of(down, lambda f: isinstance(f, TTSStoppedFrame))
    words = [f for f in down[start + 1 : stop] if isinstance(f, TTSAudioRawFrame) or f.sync_with_audio]
    assert_utterance(words, pcm, rate, 1, None)


# --- robustness ----------------------------------------------------------------------------------


def test_a_hundred_utterances_leave_nothing_behind(engine, tpl):
    """``max_lag=0``: every frame is its template frame (no U-Net), so 100 utterances are quick;
    the audio all leaves as it came and the service keeps no state per utterance."""
    rate, utterances = 16000, 100
    pcms = [tts_pcm(0.2, rate, seed=k) for k in range(utterances)]
    service = SyncTalkVideoService(engine, template=tpl, max_lag=0.0)
    sent = []
    for pcm in pcms:
        sent += [TTSStartedFrame(), *tts_frames(pcm, rate, sizes=(1601,)), TTSStoppedFrame()]
    seen = []

    class Snapshot(BaseObserver):  # when utterance k has left, the service holds nothing of it
        async def on_push_frame(self, data: FramePushed):
            if data.source is service and isinstance(data.frame, TTSStoppedFrame):
                seen.append(not any(k in service._utts for k in range(len(seen) + 1)))

    down, _ = run(service, sent, observers=[Snapshot()])
    stops = [i for i, f in enumerate(down) if isinstance(f, TTSStoppedFrame)]
    assert len(stops) == utterances
    begin = 0
    for pcm, stop in zip(pcms, stops):
        assert isinstance(down[begin], TTSStartedFrame)
        assert_utterance(down[begin + 1 : stop], pcm, rate, 1, None)
        begin = stop + 1
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    for pos, f in enumerate(images[:24]):  # skipped frames: the template sweep, untouched
        np.testing.assert_array_equal(bgr(f), tpl.frame(int(ping_pong(len(tpl), 1, first=pos)[0])))
    assert seen == [True] * utterances and not service._out and len(service._utts) == 0


def test_a_failed_stream_lets_the_audio_through(engine, tpl, monkeypatch):
    """The engine fails: the error goes upstream, the audio still reaches the user, in order."""

    encode, calls = engine.encode, []

    def broken(mel):  # the warm-up's call works, the first real one fails
        calls.append(len(mel))
        if len(calls) > 1:
            raise RuntimeError("encoder lost")
        return encode(mel)

    monkeypatch.setattr(engine, "encode", broken)
    pcm = tts_pcm(0.5, 24000, seed=9)
    service = SyncTalkVideoService(engine, template=tpl)
    down, up = run(service, [TTSStartedFrame(), *tts_frames(pcm, 24000), SleepFrame(sleep=0.5), TTSStoppedFrame()])
    assert isinstance(down[0], TTSStartedFrame) and isinstance(down[-1], TTSStoppedFrame)
    assert not any(isinstance(f, OutputImageRawFrame) for f in down)
    assert b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame)) == pcm
    assert any(isinstance(f, ErrorFrame) and "encoder lost" in f.error for f in up)


def test_audio_the_stream_cannot_take_passes_unchanged(engine, tpl):
    """A chunk of another format ends the utterance; one the stream refuses leaves as it came, in order."""
    pcm = tts_pcm(0.4, 16000, seed=10)
    bad = TTSAudioRawFrame(audio=b"\x01\x00" * 10, sample_rate=0, num_channels=1)
    service = SyncTalkVideoService(engine, template=tpl, max_lag=0.0)
    down, _ = run(service, [TTSStartedFrame(), *tts_frames(pcm, 16000), bad, TTSStoppedFrame()])
    assert isinstance(down[0], TTSStartedFrame) and down[-2] is bad and isinstance(down[-1], TTSStoppedFrame)
    assert_utterance(down[1:-2], pcm, 16000, 1, None)


def test_bad_arguments(engine, tpl, model_dir, tmp_path):
    with pytest.raises(ValueError, match="max_lag"):
        SyncTalkVideoService(engine, template=tpl, max_lag=-1)
    with pytest.raises(stf.TemplateError):
        SyncTalkVideoService(engine, template=tmp_path / "nobody")
    with pytest.raises(stf.FeatureError, match="audio encoder"):
        SyncTalkVideoService(stf.Engine(model_dir / "unet_328.onnx"), template=tpl)
