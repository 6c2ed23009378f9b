"""Sinks, atomic files and the streaming resampler, checked against independent oracles.

MP4s are decoded back with PyAV (frame count, duration, sound), PNGs are read
back with OpenCV and compared exactly, resampled audio is compared with
soxr's one-shot resampler.
"""

from __future__ import annotations

import errno
import os
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import soxr

from synctalk_fast._util import atomic as _atomic
from synctalk_fast._util.atomic import PartFile, atomic_path, write_atomic
from synctalk_fast.audio import StreamResampler
from synctalk_fast.errors import OutputError
from synctalk_fast.sinks import (
    TRACK_SAMPLE_RATE,
    VIDEO_SUFFIXES,
    CallbackSink,
    FrameFolderSink,
    MemorySink,
    Mp4Sink,
    Sink,
    open_sink,
)
from synctalk_fast.sinks import folder as _folder_module
from synctalk_fast.sinks import mp4 as _mp4_module

SR = 16000
FPS = 25
HOP = SR // FPS  # samples per frame


def _frame(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4 + i) % 256, (y * 5 + 3 * i) % 256, (x + y + 7 * i) % 256], axis=-1).astype(np.uint8)


def _tone(n: int, rate: int = SR, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".part")]


def _decode(path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "duration": v.duration * v.time_base,
            "audio": [(a.sample_rate, a.duration * a.time_base) for a in c.streams.audio],
        }
        info["frames"] = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    if info["audio"]:
        with av.open(str(path)) as c:
            info["samples"] = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return info


def _write_all(sink, n: int, *, audio: np.ndarray | None = None) -> list[np.ndarray]:
    frames = [_frame(i) for i in range(n)]
    for i, f in enumerate(frames):
        sink.write(f, None if audio is None else audio[HOP * i : HOP * (i + 1)])
    sink.close()
    return frames


def _assert_pngs(folder, frames) -> None:
    names = sorted(os.listdir(folder))
    assert names == [f"frame_{i:05d}.png" for i in range(len(frames))]
    for name, f in zip(names, frames):
        assert np.array_equal(cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED), f)


# ---------------------------------------------------------------- open_sink


@pytest.mark.parametrize("name", ["out.mp4", "OUT.MOV", "clip.m4v", "a/b/c.mkv"])
def test_open_sink_video_file(tmp_path, name):
    path = tmp_path / name
    sink = open_sink(path, fps=FPS, preset="ultrafast")
    assert isinstance(sink, Mp4Sink) and isinstance(sink, Sink)
    _write_all(sink, 5)
    info = _decode(path)
    assert len(info["frames"]) == 5 and info["duration"] == Fraction(5, FPS) and info["audio"] == []
    assert _leftovers(path.parent) == []


def test_open_sink_folder(tmp_path):
    new = tmp_path / "frames"  # no suffix: a folder, created at close
    sink = open_sink(str(new))
    assert isinstance(sink, FrameFolderSink)
    frames = _write_all(sink, 3, audio=_tone(3 * HOP))  # audio is ignored
    _assert_pngs(new, frames)

    dotted = tmp_path / "run.v2"  # an existing directory, whatever its name
    dotted.mkdir()
    sink = open_sink(dotted)
    assert isinstance(sink, FrameFolderSink)
    _assert_pngs(dotted, _write_all(sink, 2))
    assert sorted(os.listdir(tmp_path)) == ["frames", "run.v2"]


def test_open_sink_jpg_folder(tmp_path):
    sink = open_sink(tmp_path / "jpgs", image_format="jpg")
    frames = _write_all(sink, 2)
    assert sorted(os.listdir(tmp_path / "jpgs")) == ["frame_00000.jpg", "frame_00001.jpg"]
    back = cv2.imread(str(tmp_path / "jpgs" / "frame_00001.jpg"))
    assert np.abs(back.astype(int) - frames[1]).mean() < 8


def test_open_sink_callable(tmp_path):
    got = []
    sink = open_sink(lambda frame, audio: got.append((frame, audio)))
    assert isinstance(sink, CallbackSink)
    frames = _write_all(sink, 2, audio=_tone(2 * HOP))
    assert [np.array_equal(g[0], f) for g, f in zip(got, frames)] == [True, True]
    assert np.array_equal(got[1][1], _tone(2 * HOP)[HOP:])
    assert os.listdir(tmp_path) == []


class _DuckSink:
    """A user's sink: the three methods, no base class."""

    def __init__(self):
        self.frames, self.state = 0, "open"

    def write(self, frame, audio=None):
        self.frames += 1

    def close(self):
        self.state = "closed"

    def abort(self):
        self.state = "aborted"


def test_duck_typed_sink_is_returned_unchanged():
    duck = _DuckSink()
    assert isinstance(duck, Sink)
    assert open_sink(duck) is duck
    assert open_sink(duck, fps=30, image_format="jpg") is duck

    class NoAbort:
        def write(self, frame, audio=None): ...

        def close(self): ...

    assert not isinstance(NoAbort(), Sink)
    with pytest.raises(TypeError, match="NoAbort"):
        open_sink(NoAbort())
    with pytest.raises(TypeError, match="class"):
        open_sink(MemorySink)  # the class, not an instance
    with pytest.raises(TypeError):
        open_sink(42)


def test_writers_are_sinks(tmp_path):
    frames = [_frame(i) for i in range(3)]
    with Mp4Sink(tmp_path / "v.mp4", preset="ultrafast") as w:
        assert isinstance(w, Sink)
        for f in frames:
            w.write(f, None)
    with Mp4Sink(tmp_path / "live.mp4", frame_audio=True, preset="ultrafast") as w:
        for f in frames:
            w.write(f, _tone(HOP))  # positional audio
    with FrameFolderSink(tmp_path / "f") as w:
        assert isinstance(w, Sink)
        for f in frames:
            w.write(f, _tone(HOP))  # ignored
    assert len(_decode(tmp_path / "v.mp4")["frames"]) == 3
    assert _decode(tmp_path / "live.mp4")["audio"] != []
    _assert_pngs(tmp_path / "f", frames)


@pytest.mark.parametrize("name", ["out.webm", "out.mp", "out.avi", "sub/dir/clip.WebM"])
def test_unknown_suffix(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(OutputError) as info:
        open_sink(path, audio=_tone(SR))
    suffix = os.path.splitext(name)[1]
    assert str(info.value) == (
        f"{path}: unknown output kind '{suffix}'; use a video file (.mp4, .mov, .m4v, .mkv) "
        "or a folder for frames (a path without a suffix)"
    )
    assert isinstance(info.value, OSError)
    assert os.listdir(tmp_path) == []  # nothing created, not even the parents


@pytest.mark.parametrize(
    "kw", [{"fps": 0}, {"fps": "fast"}, {"crf": 52}, {"crf": 1.5}, {"preset": "quick"}, {"image_format": "bmp"}]
)
@pytest.mark.parametrize("name", ["x.mp4", "frames"])
def test_open_sink_bad_arguments(tmp_path, kw, name):
    with pytest.raises(ValueError):
        open_sink(tmp_path / name, **kw)
    assert os.listdir(tmp_path) == []


def test_video_suffixes():
    assert VIDEO_SUFFIXES == (".mp4", ".mov", ".m4v", ".mkv")
    assert TRACK_SAMPLE_RATE == 48000
    with pytest.warns(DeprecationWarning, match="TRACK_RATE is deprecated; use TRACK_SAMPLE_RATE"):
        from synctalk_fast.sinks import TRACK_RATE
    assert TRACK_RATE == TRACK_SAMPLE_RATE


# ---------------------------------------------------------------- abort


@pytest.mark.parametrize("existing", [False, True])
def test_mp4_abort_leaves_nothing(tmp_path, existing):
    path = tmp_path / "out.mp4"
    if existing:
        path.write_bytes(b"previous")
    sink = open_sink(path, audio=_tone(SR), preset="ultrafast")
    for i in range(5):
        sink.write(_frame(i))
    assert len(_leftovers(tmp_path)) == 1
    sink.abort()
    sink.abort()
    assert _leftovers(tmp_path) == []
    if existing:
        assert path.read_bytes() == b"previous"
    else:
        assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="aborted"):
        sink.write(_frame(0))


@pytest.mark.parametrize("existing", [False, True])
def test_folder_abort_leaves_nothing(tmp_path, existing):
    folder = tmp_path / "new" / "frames"
    if existing:
        folder.mkdir(parents=True)
        (folder / "frame_00000.png").write_bytes(b"old")
    sink = open_sink(folder)
    for i in range(3):
        sink.write(_frame(i))
    sink.abort()
    if existing:
        assert os.listdir(tmp_path / "new") == ["frames"]
        assert os.listdir(folder) == ["frame_00000.png"]
        assert (folder / "frame_00000.png").read_bytes() == b"old"
    else:
        assert os.listdir(tmp_path) == []  # the parent it created is gone too


def test_sink_with_block_aborts_on_exception(tmp_path):
    path = tmp_path / "x.mov"
    with pytest.raises(RuntimeError):
        with open_sink(path, preset="ultrafast") as sink:
            sink.write(_frame(0))
            raise RuntimeError
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- Mp4Sink sound


def _check_tone(decoded: np.ndarray, seconds: float) -> None:
    """Decoded 48 kHz sound is the 440 Hz tone (the edit list removes the encoder delay)."""
    n = int(seconds * TRACK_SAMPLE_RATE)
    assert n - 1024 <= len(decoded) <= n + 2048
    want = _tone(n, TRACK_SAMPLE_RATE)
    err = decoded[:n] - want[: len(decoded)]
    assert np.sqrt(np.mean(err[4800:-4800] ** 2)) < 0.05


def test_mp4_with_per_frame_audio(tmp_path):
    path = tmp_path / "live.mp4"
    tone = _tone(30 * HOP)
    sink = Mp4Sink(path, fps=FPS, preset="ultrafast", frame_audio=True)
    _write_all(sink, 30, audio=tone)
    info = _decode(path)
    assert len(info["frames"]) == 30 and info["duration"] == Fraction(6, 5)
    [(rate, duration)] = info["audio"]
    assert rate == TRACK_SAMPLE_RATE and duration == Fraction(6, 5)
    _check_tone(info["samples"], 1.2)

    with Mp4Sink(tmp_path / "y.mp4", frame_audio=True, preset="ultrafast") as sink:
        with pytest.raises(ValueError, match="frame_audio"):
            sink.write(_frame(0))  # the track comes with the frames: required
        sink.write(_frame(0), tone[:HOP])


def test_mp4_with_whole_track_ignores_frame_audio(tmp_path):
    tone = _tone(30 * HOP)
    noise = np.random.default_rng(0).uniform(-1, 1, 30 * HOP).astype(np.float32)
    _write_all(Mp4Sink(tmp_path / "a.mp4", audio=tone, preset="ultrafast"), 30, audio=noise)
    _write_all(Mp4Sink(tmp_path / "b.mp4", audio=tone, preset="ultrafast"), 30)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    info = _decode(tmp_path / "a.mp4")
    assert len(info["frames"]) == 30
    [(rate, duration)] = info["audio"]
    assert rate == TRACK_SAMPLE_RATE and duration == Fraction(6, 5)
    _check_tone(info["samples"], 1.2)


def test_mp4_without_sound(tmp_path):
    path = tmp_path / "silent.mp4"
    _write_all(Mp4Sink(path, preset="ultrafast"), 4, audio=_tone(4 * HOP))  # per-frame audio ignored
    info = _decode(path)
    assert info["audio"] == [] and len(info["frames"]) == 4
    with pytest.raises(ValueError, match="not both"):
        Mp4Sink(tmp_path / "z.mp4", audio=_tone(HOP), frame_audio=True)
    assert sorted(os.listdir(tmp_path)) == ["silent.mp4"]


# ---------------------------------------------------------------- memory and callbacks


def test_memory_sink_keeps_copies():
    sink = MemorySink()
    buf, sound = np.zeros((8, 8, 3), np.uint8), np.zeros(HOP, np.float32)
    for i in range(3):
        buf[:] = i  # the caller reuses its buffers
        sound[:] = i / 10
        sink.write(buf, sound)
    sink.write(buf)
    buf[:] = 99
    sound[:] = 1
    assert [int(f.max()) for f in sink.frames] == [0, 1, 2, 2]
    assert [f.min() == f.max() for f in sink.frames] == [True] * 4
    assert [None if a is None else float(a[0]) for a in sink.audio] == [0.0, np.float32(0.1), np.float32(0.2), None]
    assert all(a.dtype == np.float32 for a in sink.audio[:3])
    assert sink.close() is sink.frames
    with pytest.raises(ValueError, match="closed"):
        sink.write(buf)
    sink.abort()  # no effect after close
    assert len(sink.frames) == 4


def test_memory_sink_abort_drops_frames():
    sink = MemorySink()
    sink.write(_frame(0), _tone(HOP))
    sink.abort()
    assert sink.frames == [] and sink.audio == []
    with pytest.raises(ValueError, match="aborted"):
        sink.write(_frame(1))
    with pytest.raises(ValueError, match="aborted"):
        sink.close()


def test_callback_sink_hands_over_owned_copies():
    got = []

    def fn(frame, audio):
        got.append((frame, audio))
        frame[:] = 7  # the callee owns its copy

    buf, sound = _frame(0), _tone(HOP)
    original = buf.copy()
    sink = CallbackSink(fn)
    sink.write(buf, sound)
    assert np.array_equal(buf, original)  # the caller's buffer is untouched
    frame, audio = got[0]
    assert not np.shares_memory(frame, buf) and not np.shares_memory(audio, sound)
    buf[:] = 0
    sound[:] = 0
    assert (frame == 7).all() and np.array_equal(audio, _tone(HOP))
    with pytest.raises(ValueError, match="differs from the first"):
        sink.write(_frame(1, 16, 16))
    with pytest.raises(ValueError, match="uint8"):
        sink.write(buf.astype(np.float32))
    assert sink.frames_written == 1
    sink.close()
    sink.close()
    assert sink.closed


def test_callback_errors_propagate():
    def fn(frame, audio):
        raise KeyError("downstream")

    with pytest.raises(KeyError):
        with CallbackSink(fn) as sink:
            sink.write(_frame(0))
    assert sink.closed and sink.frames_written == 0
    with pytest.raises(TypeError):
        CallbackSink("not callable")


# ---------------------------------------------------------------- atomic files


def test_write_atomic_creates_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "data.bin"
    assert write_atomic(path, b"first") == path
    assert path.read_bytes() == b"first"
    write_atomic(str(path), memoryview(b"second" * 1000))
    assert path.read_bytes() == b"second" * 1000
    assert _leftovers(path.parent) == []


@pytest.mark.parametrize("where", ["write", "sync", "replace", "interrupt"])
def test_write_atomic_failure_leaves_previous_file(tmp_path, monkeypatch, where):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    real_write = PartFile.write

    def half_then_fail(self, data):
        real_write(self, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fail(*args, **kwargs):
        raise KeyboardInterrupt if where == "interrupt" else OSError(errno.EIO, os.strerror(errno.EIO))

    if where == "write":
        monkeypatch.setattr(PartFile, "write", half_then_fail)
    elif where == "sync":
        monkeypatch.setattr(PartFile, "sync", fail)
    else:
        monkeypatch.setattr(_atomic.os, "replace", fail)
    with pytest.raises(KeyboardInterrupt if where == "interrupt" else OSError):
        write_atomic(path, b"new content " * 100)
    monkeypatch.undo()
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_write_atomic_failure_removes_created_parents(tmp_path, monkeypatch):
    monkeypatch.setattr(PartFile, "write", lambda self, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError, match="full"):
        write_atomic(tmp_path / "x" / "y" / "f.bin", b"data")
    assert os.listdir(tmp_path) == []


def test_file_sinks_write_through_the_atomic_part_file():
    # patching PartFile.write reaches every byte every file sink writes
    assert _mp4_module.PartFile is PartFile and _folder_module.PartFile is PartFile


def test_atomic_path_success_and_replace(tmp_path):
    path = tmp_path / "sub" / "model.onnx"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".model.onnx.") and tmp.name.endswith(".part")
        assert not tmp.exists()
        tmp.write_bytes(b"one")
        assert not path.exists()  # not before the block ends
    assert path.read_bytes() == b"one"
    with atomic_path(str(path)) as tmp:
        tmp.write_bytes(b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["model.onnx"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_failure_leaves_previous_file(tmp_path, exc):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(exc):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")  # the tool wrote part of it, then failed
            raise exc()
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_atomic_path_nothing_written(tmp_path):
    path = tmp_path / "new" / "model.onnx"
    with pytest.raises(FileNotFoundError) as info:
        with atomic_path(path):
            pass
    assert str(path) in str(info.value)
    assert os.listdir(tmp_path) == []  # the parent it created is removed


# ---------------------------------------------------------------- StreamResampler


def _chunks(n: int, how) -> list[slice]:
    rng = np.random.default_rng(3)
    out, i = [], 0
    while i < n:
        k = int(rng.integers(0, 3000)) if how == "random" else how
        out.append(slice(i, i + k))
        i += k
    return out


@pytest.mark.parametrize("rates", [(44100, 16000), (16000, 48000), (22050, 16000)])
@pytest.mark.parametrize("how", [1, 441, 6177, "random"])
def test_stream_resampler_equals_one_shot(rates, how):
    in_rate, out_rate = rates
    n = 20000 if how == 1 else 60000
    x = (0.3 * np.random.default_rng(1).standard_normal(n)).astype(np.float32)
    want = soxr.resample(x, in_rate, out_rate, quality="soxr_hq")
    r = StreamResampler(in_rate, out_rate)
    parts = [r.push(x[s]) for s in _chunks(n, how)]
    parts.append(r.finish())
    got = np.concatenate(parts)
    assert all(p.dtype == np.float32 and p.ndim == 1 for p in parts)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert (r.samples_in, r.samples_out) == (n, len(want))
    with pytest.raises(ValueError, match="finished"):
        r.push(x[:10])
    with pytest.raises(ValueError, match="finished"):
        r.finish()


def test_stream_resampler_equal_rates_pass_through():
    x = _tone(5000)
    r = StreamResampler(16000, 16000)
    parts = [r.push(x[s]) for s in _chunks(len(x), 777)]
    tail = r.finish()
    assert len(tail) == 0 and tail.dtype == np.float32
    assert np.array_equal(np.concatenate(parts), x)
    assert (r.samples_in, r.samples_out) == (5000, 5000)
    as64 = StreamResampler(8000, 8000).push(x.astype(np.float64))
    assert as64.dtype == np.float32 and np.array_equal(as64, x)


def test_stream_resampler_rejects_bad_input():
    for rates in [(0, 16000), (16000, -1), (16000.0, 16000), (True, 16000)]:
        with pytest.raises(ValueError):
            StreamResampler(*rates)
    r = StreamResampler(44100, 16000)
    with pytest.raises(ValueError, match="1-D"):
        r.push(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="float"):
        r.push(np.zeros(10, np.int16))
    assert len(r.push(np.zeros(0, np.float32))) == 0
