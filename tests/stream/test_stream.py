"""Streaming: chunks in, frames out, identical to offline generation."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from helpers import SPEECH, TEMPLATE, needs_data

import synctalk_fast as stf
from synctalk_fast import feature_windows, paste_back, prepare_input
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.template import ping_pong

RATE_IN = 44100


@pytest.fixture(scope="module")
def stereo_file(tmp_path_factory):
    """1.3 s of speech-like sound as a stereo 44.1 kHz 16-bit WAV (channels differ)."""
    wav = synthetic_speech(1.3)
    y = soxr.resample(wav, 16000, RATE_IN).astype(np.float32)
    path = tmp_path_factory.mktemp("audio") / "stereo.wav"
    sf.write(path, np.stack([y, 0.6 * y[::-1]], axis=1), RATE_IN, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def offline(pipe, tpl, stereo_file):
    """What offline generation makes of the file: (features, frames, 16 kHz samples)."""
    feats = pipe.audio_features(stereo_file)
    return feats, list(pipe.frames(feats, tpl)), stf.load_audio(stereo_file)


def expected_frames(pipe, feats, tpl, *, first: int):
    """Frames of ``feats`` when the utterance starts at stream position ``first``:
    SPEC 1.9 + 2 + 3 one frame at a time, with the template sweep continued."""
    out = []
    for i in range(feats.shape[0]):
        k = int(ping_pong(len(tpl), 1, first=first + i)[0])
        frame, box = tpl.frame(k), tpl.box(k)
        image = prepare_input(frame, box)[None]
        pred = pipe.unet.run(image=image, audio=feature_windows(feats, start=i, stop=i + 1))
        out.append(paste_back(frame, box, pred[0]))
    return out


def push_in_chunks(stream, data, sizes, *, rate, channels=None, drain=True):
    """Push ``data`` in chunks of ``sizes`` (an int or a callable), collecting
    the frames computable after each chunk when ``drain``."""
    got, i = [], 0
    while i < len(data):
        n = sizes() if callable(sizes) else sizes
        stream.push_audio(data[i : i + n], sample_rate=rate, channels=channels)
        i += n
        if drain:
            got += list(stream.frames())
    return got


def assert_same(got, want, *, first_index=0):
    assert len(got) == len(want)
    assert [f.index for f in got] == list(range(first_index, first_index + len(want)))
    diff = max(int(np.abs(f.image.astype(np.int16) - w).max()) for f, w in zip(got, want))
    assert diff == 0


# --- exactness ------------------------------------------------------------------


@pytest.mark.parametrize("chunk", ["1 sample", "20 ms", "333 ms", "random"])
def test_chunked_stereo_equals_offline(pipe, tpl, stereo_file, offline, chunk):
    feats, want, wav16 = offline
    pcm, rate = sf.read(stereo_file, dtype="int16")  # [n, 2]
    interleaved = pcm.reshape(-1)
    rng = np.random.default_rng(7)
    sizes = {"1 sample": 1, "20 ms": 2 * 882, "333 ms": 2 * 14685, "random": lambda: int(rng.integers(1, 9000))}[chunk]
    with stf.Stream(pipe, template=tpl) as stream:
        got = push_in_chunks(stream, interleaved, sizes, rate=rate, channels=2, drain=chunk != "1 sample")
        stream.flush()
        got += list(stream.frames())
    assert_same(got, want)
    # each frame carries the 40 ms of 16 kHz speech it shows (zeros past the end)
    padded = np.concatenate([wav16, np.zeros(640 * len(want), np.float32)])
    for f in got:
        np.testing.assert_array_equal(f.audio, padded[640 * f.frame : 640 * (f.frame + 1)])
        assert f.utterance == 0 and not f.idle and f.time == pytest.approx(f.index / 25)


def test_float_frames_by_channels_and_pcm_bytes(pipe, tpl, stereo_file, offline):
    """[n, 2] float32 chunks, and raw int16 PCM bytes cut at odd byte offsets."""
    _, want, _ = offline
    data, rate = sf.read(stereo_file, dtype="float32")
    with stf.Stream(pipe, template=tpl) as stream:
        push_in_chunks(stream, data, 1234, rate=rate, drain=False)
        stream.flush()
        assert_same(list(stream.frames()), want)
    raw = sf.read(stereo_file, dtype="int16")[0].tobytes()
    with stf.Stream(pipe, template=tpl) as stream:
        for i in range(0, len(raw), 3001):  # odd sizes: samples and stereo frames split between chunks
            stream.push_audio(raw[i : i + 3001], sample_rate=rate, channels=2)
        stream.flush()
        assert_same(list(stream.frames()), want)


@pytest.mark.parametrize("layout", ["throughput", "latency"])
def test_session_layouts_give_the_same_frames(pipe, tpl, offline, layout):
    _, want, wav16 = offline
    with stf.Stream(pipe, template=tpl, layout=layout) as stream:
        assert stream.layout == layout
        assert len(stream.unets) == (1 if layout == "latency" else len(pipe.unets))
        stream.push_audio(wav16)
        stream.flush()
        assert_same(list(stream.frames()), want)
        assert stream.stats()["layout"] == layout
    with pytest.raises(ValueError, match="layout"):
        stf.Stream(pipe, template=tpl, layout="fast")


@needs_data
def test_real_template_and_speech_16k_equals_offline(pipe):
    wav = stf.load_audio(SPEECH)[: 16000 * 3]
    tpl = stf.Template(TEMPLATE)
    want = list(pipe.frames(pipe.audio_features(wav), tpl, start=5))
    with stf.Stream(pipe, template=tpl, start=5) as stream:
        got = push_in_chunks(stream, wav, 320, rate=16000)
        stream.flush()
        got += list(stream.frames())
    assert_same(got, want)


# --- latency logic ------------------------------------------------------------------


def need(i: int) -> int:
    """Samples frame i needs (SPEC 1.6-1.9 restated): feature row i + 7 is the
    embedding of window i + 6, whose last mel frame t = s + 15 (s = int(80 *
    (i + 6) / 25)) is final once 200 t + 400 samples have arrived."""
    s = int(80.0 * ((i + 6) / 25.0))
    return 200 * (s + 15) + 400


@pytest.mark.parametrize("i", [0, 1, 5, 10])
def test_frame_computable_exactly_when_its_audio_has_arrived(pipe, tpl, offline, i):
    """Nothing is emitted before its audio exists; nothing waits for audio it does not need."""
    _, want, wav16 = offline
    with stf.Stream(pipe, template=tpl) as stream:
        stream.push_audio(wav16[: need(i) - 1])
        early = list(stream.frames())
        stream.push_audio(wav16[need(i) - 1 : need(i)])
        got = early + list(stream.frames())
    assert len(early) == i  # frame i lacks one sample
    assert_same(got, want[: i + 1])
    assert need(0) == 7200  # 0.45 s


def test_realtime_feeder_latency_is_measured(pipe, tpl, offline):
    """20 ms chunks at wall-clock pace from another thread: every frame comes
    after the audio it needs, in order, exactly as offline; the figures are consistent."""
    _, want, wav16 = offline
    pushed: list[tuple[float, int]] = []
    stream = stf.Stream(pipe, template=tpl)

    def feeder():
        t0 = time.perf_counter()
        for i in range(0, len(wav16), 320):
            time.sleep(max(0.0, t0 + (i + 320) / 16000 - time.perf_counter()))
            stream.push_audio(wav16[i : i + 320])
            pushed.append((time.perf_counter(), min(i + 320, len(wav16))))
        stream.close()

    thread = threading.Thread(target=feeder)
    thread.start()
    got = list(stream.frames(follow=True))
    thread.join()
    assert_same(got, want)
    times = np.array([t for t, _ in pushed])
    counts = np.array([n for _, n in pushed])
    for f in got:
        assert f.emitted >= f.ready >= f.audio_in
        if need(f.frame) <= len(wav16):
            # the push that completed its audio returned before the frame came out
            k = int(np.searchsorted(counts, need(f.frame)))
            assert times[k] <= f.emitted + 1e-3
    stats = stream.stats()
    assert stats["frames"] == len(want) and stats["idle_frames"] == 0
    waits = np.array([f.wait for f in got])
    assert stats["wait_p50"] == pytest.approx(np.percentile(waits, 50))
    assert stats["delay_p95"] >= 0.4  # the model's context: ~0.45 s of audio per frame
    assert stream.lag == 0 and stream.backlog == 0


# --- control ---------------------------------------------------------------------------


def test_interrupt_then_continue(pipe, tpl, offline):
    feats, want, wav16 = offline
    with stf.Stream(pipe, template=tpl) as stream:
        stream.push_audio(wav16[:12000])
        first = list(stream.frames())
        assert 0 < len(first) < len(want)
        stream.push_audio(wav16[12000:16000])  # more pending audio ...
        stream.interrupt()  # ... dropped at once, with any frame not yet emitted
        assert stream.backlog == 0 and list(stream.frames()) == []
        stream.push_audio(wav16)  # a new utterance, continuing the template sweep
        stream.flush()
        second = list(stream.frames())
        assert stream.stats()["interrupts"] == 1
    assert_same(first, want[: len(first)])
    assert_same(second, expected_frames(pipe, feats, tpl, first=len(first)), first_index=len(first))
    assert all(f.utterance == 1 for f in second)


def test_idle_then_speech_then_idle(pipe, tpl, offline):
    feats, want, wav16 = offline
    stream = stf.Stream(pipe, template=tpl, idle=True)
    got = []

    def consume():
        got.extend(stream.frames(follow=True))

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)  # ~7 idle frames at 25 frames/s
    stream.push_audio(wav16)
    stream.flush()
    while stream.stats()["frames"] < len(want):
        time.sleep(0.05)
    time.sleep(0.2)
    stream.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [f.index for f in got] == list(range(len(got)))  # one sweep, no gap, no repeat
    speech = [f for f in got if not f.idle]
    p0 = speech[0].index
    before, after = got[:p0], got[p0 + len(speech) :]
    assert len(before) >= 3 and len(after) >= 2 and all(f.idle for f in before + after)
    assert_same(speech, expected_frames(pipe, feats, tpl, first=p0), first_index=p0)
    for f in before + after:  # the template frame untouched, silent
        k = int(ping_pong(len(tpl), 1, first=f.index)[0])
        np.testing.assert_array_equal(f.image, tpl.frame(k))
        assert not f.audio.any()
    gaps = np.diff([f.emitted for f in before])
    assert gaps.min() >= 0.9 / 25  # paced at the frame rate


def test_thread_safe_push_and_asyncio(pipe, tpl, offline):
    _, want, wav16 = offline
    stream = stf.Stream(pipe, template=tpl)

    def feeder():
        for i in range(0, len(wav16), 500):
            stream.push_audio(wav16[i : i + 500])
        stream.close()

    async def consume():
        threading.Thread(target=feeder).start()
        return [f async for f in stream]

    assert_same(asyncio.run(consume()), want)


def test_frames_timeout_and_idle_pacing_in_a_thread(pipe, tpl):
    """``frames(timeout=)`` ends when no frame came in time; with ``idle`` the waits are the frame period."""
    with stf.Stream(pipe, template=tpl, warmup=False) as stream:
        t0 = time.perf_counter()
        assert list(stream.frames(follow=True, timeout=0.2)) == []
        assert 0.2 <= time.perf_counter() - t0 < 5
    with stf.Stream(pipe, template=tpl, idle=True, warmup=False) as stream:
        got = list(itertools.islice(stream.frames(follow=True, timeout=5), 6))  # idle frames keep coming
        stream.close()
        got += list(stream.frames(follow=True))  # closed: ends at once
    assert len(got) == 6 and all(f.idle for f in got)
    assert [f.index for f in got] == list(range(6))
    assert np.diff([f.emitted for f in got]).min() >= 0.9 / 25


def test_slow_consumer_keeps_the_backlog_bounded(pipe, tpl, offline):
    _, want, wav16 = offline
    with stf.Stream(pipe, template=tpl, max_ready=3) as stream:
        stream.push_audio(wav16)
        stream.flush()
        got = []
        for f in stream.frames():
            time.sleep(0.05)
            got.append(f)
        stats = stream.stats()
    assert_same(got, want)
    assert stats["max_buffered"] <= 3  # images in compute or waiting; the rest waits as features
    assert stats["wait_max"] > 0.5


def test_max_lag_catches_up_with_template_frames(pipe, tpl, offline):
    """Hardware too slow for real time: late frames come out unsynced, counted, in order."""
    _, want, wav16 = offline
    with stf.Stream(pipe, template=tpl, max_lag=0.05) as stream:
        stream.push_audio(wav16)
        stream.flush()
        time.sleep(0.2)  # every frame is now later than max_lag
        got = list(stream.frames())
        stats = stream.stats()
    assert [f.index for f in got] == list(range(len(want)))
    skipped = [f for f in got if f.skipped]
    assert len(skipped) == stats["skipped_frames"] > 0
    for f in got:
        k = int(ping_pong(len(tpl), 1, first=f.index)[0])
        expected = tpl.frame(k) if f.skipped else want[f.frame]
        np.testing.assert_array_equal(f.image, expected)


# --- bad input -------------------------------------------------------------------------


def test_bad_input_is_reported(pipe, tpl, offline, model_dir):
    wav16 = offline[2]
    with stf.Stream(pipe, template=tpl) as stream:
        with pytest.raises(stf.AudioError, match="int16"):
            stream.push_audio(np.zeros(10, np.int32))
        with pytest.raises(stf.AudioError, match="NaN"):
            stream.push_audio(np.array([0.0, np.nan], np.float32))
        with pytest.raises(stf.AudioError, match="shape"):
            stream.push_audio(np.zeros((2, 2, 2), np.float32))
        with pytest.raises(stf.AudioError, match="sample_rate"):
            stream.push_audio(np.zeros(10, np.float32), sample_rate=0)
        stream.push_audio(np.zeros(100, np.float32), sample_rate=24000)
        with pytest.raises(stf.AudioError, match="flush"):
            stream.push_audio(np.zeros(100, np.float32), sample_rate=16000)
        with pytest.raises(stf.AudioError, match="too short"):
            stream.flush()
        stream.push_audio(wav16)  # the stream goes on
        stream.flush()
        assert len(list(stream.frames())) == len(offline[1])
    with pytest.raises(ValueError, match="closed"):
        stream.push_audio(wav16)
    with pytest.raises(stf.FeatureError, match="audio_encoder"):
        stf.Stream(stf.Pipeline(model_dir / "unet_328.onnx"), template=tpl)


# --- recording and CLI -----------------------------------------------------------------


def test_video_writer_takes_audio_with_each_frame(tmp_path):
    from synctalk_fast.video import VideoWriter

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(640 * 30) / 16000)).astype(np.float32)
    path = tmp_path / "live.mp4"
    with VideoWriter(path, fps=25, frame_audio=True, audio_rate=16000, sample_rate=48000) as w:
        for i in range(30):
            w.write(np.full((64, 64, 3), 8 * i, np.uint8), audio=tone[640 * i : 640 * (i + 1)])
        with pytest.raises(ValueError, match="frame_audio"):
            w.write(np.zeros((64, 64, 3), np.uint8))
    with av.open(str(path)) as c:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        n_video = c.streams.video[0].frames
    assert n_video == 30
    assert 48000 * 1.2 - 1024 <= len(decoded) <= 48000 * 1.2 + 2048
    assert abs(np.sqrt(np.mean(decoded[4800:-4800] ** 2)) - 0.3 / np.sqrt(2)) < 0.03


@pytest.mark.slow
def test_cli_stream_records_and_reports(model_dir, tpl, stereo_file, offline, tmp_path):
    out, report = tmp_path / "live.mp4", tmp_path / "stats.json"
    cmd = [
        sys.executable,
        "-m",
        "synctalk_fast",
        "stream",
        "--audio",
        str(stereo_file),
        "--template",
        str(tpl.folder),
        "--model",
        str(model_dir / "unet_328.onnx"),
        "--audio-encoder",
        str(model_dir / "audio_encoder.onnx"),
        "--realtime",
        "-o",
        str(out),
        "--json",
        str(report),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "p95" in run.stdout and "frames/s" in run.stdout
    stats = json.loads(report.read_text())
    assert stats["frames"] == len(offline[1]) and stats["realtime"] and stats["chunk_ms"] == 20
    assert stats["wait_p50"] <= stats["wait_p95"] <= stats["wait_max"]
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == len(offline[1]) and c.streams.audio
    bad = subprocess.run(
        cmd[:5] + [str(tmp_path / "missing.wav")] + cmd[6:], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert bad.returncode == 2 and "error" in bad.stderr and "Traceback" not in bad.stderr
