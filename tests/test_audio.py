"""Audio stage against librosa / numpy: numerics §1.1-1.6."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from helpers import SPEECH, needs_data

import synctalk_fast as stf
from synctalk_fast import _backend
from synctalk_fast.reference import reference_mel

SR = 16000
MEL_TOL = 1e-4  # numerics §1.5 parity bar


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    t = np.arange(SR * 2) / SR
    return {
        "silence": np.zeros(SR, np.float32),
        "sine_440": (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "white_noise": rng.uniform(-1, 1, SR * 2).astype(np.float32),
        "full_scale_clipped": np.clip(3 * np.sin(2 * np.pi * 97 * t), -1, 1).astype(np.float32),
        "one_past_hop": rng.uniform(-0.3, 0.3, 200 * 37 + 1).astype(np.float32),
        "point_two_seconds": rng.uniform(-0.3, 0.3, 3200).astype(np.float32),
        "single_sample": np.array([0.25], np.float32),
    }


SIGNALS = _signals()


@pytest.mark.parametrize("name", list(SIGNALS))
def test_mel_matches_librosa_reference_on_synthetic_signals(backend, name):
    wav = SIGNALS[name]
    got = stf.mel_spectrogram(wav)
    want = reference_mel(wav)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape == (80, 1 + wav.size // 200)
    assert np.abs(got - want).max() <= MEL_TOL


@needs_data
def test_mel_matches_librosa_reference_on_real_speech(backend):
    wav = stf.load_audio(SPEECH)
    got = stf.mel_spectrogram(wav)
    want = reference_mel(wav)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= MEL_TOL


def test_mel_threads_give_identical_result(backend):
    wav = SIGNALS["white_noise"]
    assert np.array_equal(stf.mel_spectrogram(wav, n_threads=1), stf.mel_spectrogram(wav, n_threads=2))


def test_mel_filterbank_equals_librosa(backend):
    import librosa

    want = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    got = _backend.kernels.mel_filterbank()
    assert got.dtype == np.float32 and got.shape == (80, 401)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "n", [1, 2, 3, 4, 5, 6, 9, 10, 15, 16, 25, 27, 45, 64, 75, 96, 125, 243, 400, 800, 960, 1000, 1024]
)
def test_rfft_matches_numpy(backend, n):
    x = np.random.default_rng(n).standard_normal(n)
    got = _backend.kernels.rfft(x)
    want = np.fft.rfft(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-6


@pytest.mark.parametrize("bad", [np.zeros(7), np.zeros(0), np.zeros((4, 4))])
def test_rfft_refuses_bad_lengths(backend, bad):
    with pytest.raises(ValueError):
        _backend.kernels.rfft(bad)


def test_mel_refuses_bad_input(backend):
    with pytest.raises(stf.AudioError, match="1-D"):
        stf.mel_spectrogram(np.zeros((2, 100), np.float32))
    with pytest.raises(stf.AudioError, match="floating point"):
        stf.mel_spectrogram(np.zeros(100, np.int16))
    with pytest.raises(stf.AudioError, match="NaN"):
        stf.mel_spectrogram(np.array([0.0, np.inf, 0.0], np.float32))


# --- mel_windows (numerics §1.6) ------------------------------------------------


@pytest.mark.parametrize("T", [16, 17, 95, 96, 97, 384, 672, 752, 832, 1328, 3591])
def test_num_mel_windows_follows_the_float_formula(T):
    n = stf.num_mel_windows(T)
    assert n == int((T - 16) / 80.0 * 25.0) + 2
    if T in (384, 672, 752, 832, 1328):  # the reference's float quirk
        assert n == (T - 16) * 25 // 80 + 2 - 1


@pytest.mark.parametrize("T", [16, 17, 40, 384, 97])
def test_mel_windows_content(T):
    mel = np.random.default_rng(T).standard_normal((80, T)).astype(np.float32)
    win = stf.mel_windows(mel)
    n = int((T - 16) / 80.0 * 25.0) + 2
    assert win.shape == (n, 1, 80, 16) and win.dtype == np.float32 and win.flags.c_contiguous
    for i in range(n):
        s = int(80.0 * (i / 25.0))
        if s + 16 > T:
            s = T - 16
        assert np.array_equal(win[i, 0], mel[:, s : s + 16])


def test_mel_windows_too_short_is_a_clear_error():
    with pytest.raises(stf.AudioError, match="too short"):
        stf.mel_windows(np.zeros((80, 15), np.float32))


@needs_data
def test_real_speech_gives_the_documented_frame_count():
    mel = stf.mel_spectrogram(stf.load_audio(SPEECH))
    assert stf.mel_windows(mel).shape[0] + 2 == 1121  # data/README.md


# --- load_audio (numerics §1.1) -------------------------------------------------


def _tone(sr: int, channels: int, seconds: float = 1.3) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    y = np.stack([0.4 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    return y.astype(np.float32)


@pytest.mark.parametrize(
    "sr,channels,fmt,subtype",
    [
        (16000, 1, "WAV", "PCM_16"),
        (44100, 2, "WAV", "PCM_16"),
        (22050, 1, "FLAC", "PCM_16"),
        (48000, 2, "OGG", "VORBIS"),
        (8000, 1, "WAV", "FLOAT"),
    ],
)
def test_load_audio_equals_librosa_load(tmp_path, sr, channels, fmt, subtype):
    import librosa

    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, _tone(sr, channels), sr, format=fmt, subtype=subtype)
    got = stf.load_audio(path)
    want, _ = librosa.load(path, sr=16000)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got, want)


@needs_data
def test_load_audio_real_speech_equals_librosa():
    import librosa

    assert np.array_equal(stf.load_audio(SPEECH), librosa.load(SPEECH, sr=16000)[0])


def test_load_audio_arrays():
    import librosa

    stereo = _tone(44100, 2)  # [n, 2]
    mono_ref = librosa.resample(librosa.to_mono(stereo.T), orig_sr=44100, target_sr=16000)
    assert np.array_equal(stf.load_audio(stereo.T, source_sample_rate=44100), mono_ref)
    assert np.array_equal(stf.load_audio(stereo, source_sample_rate=44100), mono_ref)  # [n, channels] recognised
    pcm = (stereo[:, 0] * 32767).astype(np.int16)
    np.testing.assert_array_equal(stf.load_audio(pcm), pcm.astype(np.float32) / 32768)


def test_load_audio_through_pyav_for_m4a(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "speech.m4a"
    sr, y = 24000, _tone(24000, 1, seconds=1.0)[:, 0]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(y[None, :], format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    got = stf.load_audio(path)
    assert got.dtype == np.float32
    assert abs(got.size - 16000) < 1600  # AAC priming/padding, about 1 s at 16 kHz
    # Same tone (AAC is lossy): spectrum peak at 220 Hz, steady amplitude 0.4.
    steady = got[2000:14000]
    assert abs(np.argmax(np.abs(np.fft.rfft(steady, n=16000))) - 220) <= 2
    assert np.isclose(np.abs(steady).max(), 0.4, rtol=0.1)


def test_load_audio_errors(tmp_path):
    with pytest.raises(stf.AudioError, match="not found"):
        stf.load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(stf.AudioError, match="cannot decode"):
        stf.load_audio(bad)
    with pytest.raises(stf.AudioError, match="NaN"):
        stf.load_audio(np.array([0.0, np.nan], np.float32))
    with pytest.raises(stf.AudioError, match="empty"):
        stf.load_audio(np.zeros(0, np.float32))


def test_load_audio_old_keyword_names_warn():
    tone = np.sin(np.arange(4410) / 10).astype(np.float32)
    new = stf.load_audio(tone, source_sample_rate=44100, sample_rate=16000)
    with pytest.warns(DeprecationWarning, match="orig_sr"):
        old = stf.load_audio(tone, orig_sr=44100, sr=16000)
    assert np.array_equal(new, old)
    with pytest.raises(TypeError, match="unexpected keyword"):
        stf.load_audio(tone, rate=1)
