"""Incremental features of one utterance (live_features), without threads:
each frame is known exactly when its audio has arrived, and equals offline."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk_fast import AudioError, feature_windows, mel_spectrogram, mel_windows, pad_embeddings
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.live_features import MIN_SAMPLES, UtteranceFeatures, frame_need, window_start


class ProjectionEncoder:
    """Deterministic stand-in for the audio encoder: a fixed random projection
    of each flattened window, one window at a time (so the result of a window
    does not depend on the batch it comes in)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.weights = (rng.standard_normal((512, 80 * 16)) / 36).astype(np.float32)
        self.calls: list[int] = []

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        assert windows.dtype == np.float32 and windows.flags.c_contiguous
        assert windows.ndim == 4 and windows.shape[1:] == (1, 80, 16) and len(windows) > 0
        self.calls.append(len(windows))
        return np.stack([self.weights @ w.reshape(-1) for w in windows])


@pytest.fixture(scope="module")
def encode():
    return ProjectionEncoder()


@pytest.fixture(scope="module")
def wav():
    return synthetic_speech(1.3, seed=3)


def offline(wav: np.ndarray, encode) -> np.ndarray:
    """Every frame's U-Net audio input as offline generation computes it, [n + 2, 32, 16, 16]."""
    return feature_windows(pad_embeddings(encode(mel_windows(mel_spectrogram(wav)))))


def computable(n: int) -> int:
    """Frames an open utterance of ``n`` samples makes: those with frame_need(i) <= n."""
    i = 0
    while frame_need(i) <= n:
        i += 1
    return i


def assert_frame(utt: UtteranceFeatures, want: np.ndarray, i: int) -> None:
    got = utt.audio_window(i)
    assert got.dtype == np.float32 and got.shape == (16, 512)
    assert np.array_equal(got.reshape(want.shape[1:]), want[i]), f"frame {i} differs from offline"


def feed(utt, data, sizes, encode, want, *, limit=64):
    """Push ``data`` in chunks; after each, exactly the frames whose audio has
    arrived are known, each equal to offline. Returns the frames known."""
    known, pos = 0, 0
    while pos < len(data):
        k = sizes() if callable(sizes) else sizes
        utt.push(data[pos : pos + k])
        pos = min(pos + k, len(data))
        assert utt.n_samples == pos
        now = utt.advance(encode, limit=limit)
        assert now == utt.frames_known() == computable(pos), pos
        for i in range(known, now):
            assert_frame(utt, want, i)
        known = now
    return known


# --- exactness ------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 160, 333, 4000, "random"])
def test_chunked_equals_offline(wav, encode, chunk):
    want = offline(wav, encode)
    rng = np.random.default_rng(11)
    sizes = (lambda: int(rng.integers(1, 6000))) if chunk == "random" else chunk
    utt = UtteranceFeatures()
    before_end = feed(utt, wav, sizes, encode, want)
    assert 0 < before_end < len(want) and not utt.complete
    utt.end()
    assert utt.advance(encode) == utt.frames_known() == len(want)
    assert utt.complete and utt.n_windows == len(want) - 2
    for i in range(len(want)):
        assert_frame(utt, want, i)
    np.testing.assert_array_equal(  # the offline call frame by frame, for good measure
        utt.audio_window(len(want) - 1).reshape(1, 32, 16, 16),
        feature_windows(pad_embeddings(encode(mel_windows(mel_spectrogram(wav)))), start=len(want) - 1, stop=len(want)),
    )


@pytest.mark.parametrize("limit", [1, 3, 64])
def test_encoder_batches_do_not_change_the_result(wav, encode, limit):
    want = offline(wav, encode)
    utt = UtteranceFeatures()
    calls = len(encode.calls)
    feed(utt, wav, 2500, encode, want, limit=limit)
    utt.end()
    assert utt.advance(encode, limit=limit) == len(want)
    assert max(encode.calls[calls:]) <= limit
    assert sum(encode.calls[calls:]) == len(want) - 2  # each window encoded once
    for i in range(len(want)):
        assert_frame(utt, want, i)


def test_whole_utterance_at_once(wav, encode):
    want = offline(wav, encode)
    utt = UtteranceFeatures()
    utt.push(wav)
    utt.end()
    assert utt.advance(encode) == len(want)
    for i in range(len(want)):
        assert_frame(utt, want, i)


def test_onnx_audio_encoder(wav, tmp_path):
    """The real (random-weights) audio encoder through ONNX Runtime, random chunks."""
    from synctalk_fast import models

    path = tmp_path / "audio_encoder.onnx"
    models.export_onnx(models.random_state_dict("audio_encoder"), path, kind="audio_encoder")
    session = models.load_session(path, threads=1)

    def encode(windows):
        return session.run(mel=windows)

    want = offline(wav, encode)
    rng = np.random.default_rng(5)
    utt = UtteranceFeatures()
    feed(utt, wav, lambda: int(rng.integers(1, 3000)), encode, want)
    utt.end()
    assert utt.advance(encode) == len(want)
    for i in range(len(want)):
        assert_frame(utt, want, i)


# --- when frames are known ---------------------------------------------------------


@pytest.mark.parametrize("i", [0, 1, 2, 5, 13, 20])
def test_frame_known_exactly_at_frame_need(wav, encode, i):
    want = offline(wav, encode)
    need = frame_need(i)
    assert need <= len(wav)
    utt = UtteranceFeatures()
    utt.push(wav[: need - 1])
    assert utt.advance(encode) == i  # one sample short
    with pytest.raises(IndexError):
        utt.audio_window(i)
    utt.push(wav[need - 1 : need])
    assert utt.advance(encode) == i + 1
    assert_frame(utt, want, i)


def test_frame_need_values():
    assert frame_need(0) == 7200  # 0.45 s: window 6 ends at mel frame 34
    assert window_start(6) == 19 and frame_need(0) == 200 * (19 + 15) + 400
    assert all(frame_need(i + 1) - frame_need(i) in (600, 800) for i in range(500))
    assert MIN_SAMPLES == 3000 and len(mel_spectrogram(np.zeros(MIN_SAMPLES, np.float32))[0]) == 16


# --- short utterances and the end --------------------------------------------------


@pytest.mark.parametrize("n", [MIN_SAMPLES, 3199, 3200, 5000, 7199, 7200, 7201, 7999])
def test_short_utterances_equal_offline(encode, n):
    wav = synthetic_speech(0.6, seed=n)[:n]
    want = offline(wav, encode)
    utt = UtteranceFeatures()
    utt.push(wav)
    assert utt.advance(encode) == computable(n) == (n >= 7200) + (n >= 7800)
    utt.end()
    assert utt.advance(encode) == len(want) >= 3
    for i in range(len(want)):
        assert_frame(utt, want, i)


def test_too_short_utterance_is_refused(encode, wav):
    utt = UtteranceFeatures()
    utt.push(wav[: MIN_SAMPLES - 1])
    assert utt.advance(encode) == 0
    with pytest.raises(AudioError, match="too short"):
        utt.end()
    assert not utt.closed and utt.advance(encode) == 0  # nothing changed: more audio may come
    with pytest.raises(AudioError, match="too short"):
        UtteranceFeatures().end()
    utt.push(wav[MIN_SAMPLES - 1 : MIN_SAMPLES])
    utt.end()
    want = offline(wav[:MIN_SAMPLES], encode)
    assert utt.advance(encode) == len(want) == 4
    for i in range(len(want)):
        assert_frame(utt, want, i)


def test_end_cuts_or_pads_to_the_length(wav, encode):
    n = len(wav)
    # samples pushed after the last step and cut by end(), as a resampler's tail
    utt = UtteranceFeatures()
    utt.push(wav)
    utt.advance(encode)
    utt.push(np.full(300, 0.5, np.float32))
    utt.end(n)
    assert utt.n_samples == n and utt.advance(encode) == len(offline(wav, encode))
    want = offline(wav, encode)
    for i in range(len(want)):
        assert_frame(utt, want, i)
    # missing samples are zeros
    utt = UtteranceFeatures()
    utt.push(wav[: n - 777])
    utt.advance(encode)
    utt.end(n)
    want = offline(np.concatenate([wav[: n - 777], np.zeros(777, np.float32)]), encode)
    assert utt.advance(encode) == len(want)
    for i in range(len(want)):
        assert_frame(utt, want, i)


def test_end_refuses_to_cut_used_samples(wav, encode):
    n = 400 + 200 * 40  # the open mel reads all n samples
    utt = UtteranceFeatures()
    utt.push(wav[:n])
    utt.advance(encode)
    with pytest.raises(ValueError, match="computed from"):
        utt.end(n - 1)
    utt.end(n)
    with pytest.raises(ValueError, match="ended"):
        utt.end()
    with pytest.raises(ValueError, match="ended"):
        utt.push(wav[:10])


def test_steps_with_a_concurrent_pusher(wav, encode):
    """The split a threaded caller uses: samples keep arriving between the
    plan (under its lock) and the embeddings (under its lock again)."""
    want = offline(wav, encode)
    utt = UtteranceFeatures()
    pos = 0
    while not utt.complete:
        plan = utt.mel_plan()  # under the lock
        if not utt.closed:  # another thread, while the mel and encoder run
            utt.push(wav[pos : pos + 1000])
            pos += 1000
        if plan is not None:
            utt.compute_mel(plan)
        batch = utt.encoder_windows(limit=4)
        emb = encode(batch.windows) if batch is not None and batch.size else None
        if not utt.closed:
            utt.push(wav[pos : pos + 700])
            pos += 700
            if pos >= len(wav):
                utt.end()
        if batch is not None:
            utt.add_embeddings(emb, batch)  # under the lock
        for i in range(utt.frames_known()):
            assert_frame(utt, want, i)
    assert utt.frames_known() == len(want)


# --- memory -----------------------------------------------------------------------


def test_long_utterance_releases_and_stays_exact(encode):
    """90 s in 1 s chunks, everything released as soon as it is used: the
    buffers stay small (past the 2048 frames after which embeddings go) and
    every frame still equals offline."""
    wav = synthetic_speech(90.0, seed=1)
    want = offline(wav, encode)
    utt = UtteranceFeatures()
    done = 0

    def take(upto):
        nonlocal done
        for i in range(done, upto):
            utt.release_frames(i)  # frame i is the first one still asked for
            assert_frame(utt, want, i)
            utt.release_samples(640 * (i + 1))
        done = upto

    for pos in range(0, len(wav), 16000):
        utt.push(wav[pos : pos + 16000])
        take(utt.advance(encode))
    utt.end()
    take(utt.advance(encode))
    assert done == len(want) > 2048
    assert utt.emb.start > 0 and utt._samples.start > 0 and utt._mel.start > 0
    assert len(utt.emb._a) == 4096 and len(utt._mel._a) == 4096 and len(utt._samples._a) <= 32768
