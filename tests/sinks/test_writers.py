"""The file sinks: MP4 (H.264 + AAC) and image folders, never partial; decoded back with PyAV."""

from __future__ import annotations

import errno
import gc
import os
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from synctalk_fast import video
from synctalk_fast._util.atomic import PartFile
from synctalk_fast.errors import OutputError
from synctalk_fast.sinks import (
    DEFAULT_ENCODER,
    DEFAULT_PRESET,
    ENCODERS,
    X264_PRESETS,
    FrameFolderSink,
    Mp4Sink,
    encoder_problem,
    resolve_encoder,
)
from synctalk_fast.sinks import encoders as _encoders
from synctalk_fast.sinks import mp4 as _mp4_module
from synctalk_fast.sinks.legacy import FrameFolderWriter, VideoWriter

SR = 16000


def _frame(i: int, h: int = 240, w: int = 320) -> np.ndarray:
    """Smooth BGR pattern drifting with ``i`` (small H.264 error at CRF 20)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    b = 128 + 90 * np.sin((x + 3 * i) / 37.0)
    g = 128 + 90 * np.cos((y - 2 * i) / 29.0)
    r = 128 + 60 * np.sin((x + y + 5 * i) / 53.0)
    return np.clip(np.stack([b, g, r], axis=-1), 0, 255).astype(np.uint8)


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _mp4(path, **kw) -> Mp4Sink:
    """An :class:`Mp4Sink` storing its track at 16 kHz, the rate of the sound given (these tests measure it there)."""
    kw.setdefault("track_sample_rate", SR)
    return Mp4Sink(path, **kw)


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".part")]


def _probe(path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "rate": v.average_rate,
            "duration": v.duration * v.time_base,
            "size": (v.codec_context.width, v.codec_context.height),
            "pix_fmt": v.codec_context.pix_fmt,
            "codec": v.codec_context.name,
            "audio": [
                (a.codec_context.name, a.duration * a.time_base, a.sample_rate, a.channels) for a in c.streams.audio
            ],
            "order": [p.stream.type for p in c.demux() if p.size],
        }
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    info["frames"] = frames
    if info["audio"]:
        with av.open(str(path)) as c:
            info["samples"] = sum(f.samples for f in c.decode(audio=0))
    return info


def _write(path, n: int, **kw) -> list[np.ndarray]:
    hw = kw.pop("hw", (240, 320))
    frames = [_frame(i, *hw) for i in range(n)]
    with _mp4(path, **kw) as w:
        for f in frames:
            w.write(f)
        assert w.frames_written == n
    return frames


def test_mp4_with_audio(tmp_path):
    path = tmp_path / "out.mp4"
    frames = _write(path, 30, fps=25, audio=_tone(1.2))
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
    info = _probe(path)
    assert (info["codec"], info["pix_fmt"], info["size"]) == ("h264", "yuv420p", (320, 240))
    assert len(info["frames"]) == 30
    assert info["rate"] == 25
    assert info["duration"] == Fraction(6, 5)
    [(codec, duration, rate, channels)] = info["audio"]
    assert (codec, rate, channels) == ("aac", SR, 1)
    assert duration == Fraction(6, 5)
    assert abs(info["samples"] / SR - 1.2) <= 0.04
    assert np.abs(info["frames"][0].astype(int) - frames[0]).mean() < 3
    assert np.abs(info["frames"][-1].astype(int) - frames[-1]).mean() < 3
    # Packets are interleaved in the file, not all of one stream first.
    order = info["order"]
    assert "audio" in order[: len(order) // 2] and "video" in order[len(order) // 2 :]


def test_decoded_audio_matches_input(tmp_path):
    path = tmp_path / "tone.mp4"
    tone = _tone(1.2)
    _write(path, 30, audio=tone)
    with av.open(str(path)) as c:
        decoded = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    assert decoded.shape[0] >= tone.shape[0]
    # The AAC encoder delay is removed by the edit list: the tone is in phase.
    err = decoded[: tone.shape[0]] - tone
    assert np.sqrt(np.mean(err[1000:-1000] ** 2)) < 0.05


def test_fps_20(tmp_path):
    path = tmp_path / "out20.mp4"
    _write(path, 24, fps=20, audio=_tone(1.2))
    info = _probe(path)
    assert len(info["frames"]) == 24
    assert info["rate"] == 20
    assert info["duration"] == Fraction(6, 5)


def test_ntsc_rate(tmp_path):
    path = tmp_path / "ntsc.mp4"
    _write(path, 10, fps=30000 / 1001, preset="ultrafast")
    info = _probe(path)
    assert info["rate"] == Fraction(30000, 1001)
    assert len(info["frames"]) == 10
    assert info["duration"] == Fraction(10 * 1001, 30000)


def test_odd_size_is_padded(tmp_path):
    path = tmp_path / "odd.mp4"
    frames = _write(path, 5, hw=(241, 321), preset="ultrafast")
    info = _probe(path)
    assert info["size"] == (322, 242)
    out = info["frames"][0].astype(int)
    padded = cv2.copyMakeBorder(frames[0], 0, 1, 0, 1, cv2.BORDER_REPLICATE)
    assert np.abs(out - padded).mean() < 3
    assert np.abs(out[:, -1] - out[:, -2]).mean() < 3  # last column repeated


def test_video_only(tmp_path):
    path = tmp_path / "silent.mp4"
    _write(path, 10, preset="ultrafast")
    info = _probe(path)
    assert info["audio"] == []
    assert len(info["frames"]) == 10


def test_audio_longer_than_video(tmp_path):
    path = tmp_path / "long_audio.mp4"
    _write(path, 10, audio=_tone(1.2), preset="ultrafast")
    info = _probe(path)
    assert len(info["frames"]) == 10
    assert info["duration"] == Fraction(2, 5)
    assert info["audio"][0][1] == Fraction(6, 5)
    assert abs(info["samples"] / SR - 1.2) <= 0.04


def test_audio_shorter_than_video(tmp_path):
    path = tmp_path / "short_audio.mp4"
    _write(path, 30, audio=_tone(0.5), preset="ultrafast")
    info = _probe(path)
    assert len(info["frames"]) == 30
    assert info["audio"][0][1] == Fraction(1, 2)


def test_audio_is_encoded_as_frames_arrive(tmp_path, monkeypatch):
    pts = []
    real = av.AudioFrame.from_ndarray
    monkeypatch.setattr(av.AudioFrame, "from_ndarray", lambda *a, **k: pts.append(len(pts)) or real(*a, **k))
    tone = _tone(1.2)
    with _mp4(tmp_path / "x.mp4", audio=tone, preset="ultrafast") as w:
        for i in range(10):
            w.write(_frame(i))
        # 10 frames = 0.4 s = 6400 samples -> 7 AAC frames of 1024, not all 19.
        assert len(pts) == 7
    assert len(pts) == 19


@pytest.mark.parametrize("how", ["exception", "abort", "interrupt", "gc"])
def test_no_partial_output(tmp_path, how):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    if how == "gc":
        w = _mp4(path, audio=_tone(1.0), preset="ultrafast")
        for i in range(5):
            w.write(_frame(i))
        assert len(_leftovers(tmp_path)) == 1
        del w
        gc.collect()
    elif how == "abort":
        w = _mp4(path, audio=_tone(1.0), preset="ultrafast")
        for i in range(5):
            w.write(_frame(i))
        w.abort()
        w.abort()
        with pytest.raises(ValueError, match="aborted"):
            w.write(_frame(0))
        with pytest.raises(ValueError, match="aborted"):
            w.close()
    else:
        exc = RuntimeError if how == "exception" else KeyboardInterrupt
        with pytest.raises(exc):
            with _mp4(path, audio=_tone(1.0), preset="ultrafast") as w:
                for i in range(5):
                    w.write(_frame(i))
                raise exc()
    assert path.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]


def test_no_output_when_new(tmp_path):
    path = tmp_path / "sub" / "dir" / "out.mp4"
    with pytest.raises(RuntimeError):
        with _mp4(path) as w:
            w.write(_frame(0))
            raise RuntimeError
    assert os.listdir(tmp_path) == []  # the parents it created are gone too


def test_close_replaces_existing_file_and_is_idempotent(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    w = _mp4(str(path), preset="ultrafast")
    w.write(_frame(0))
    assert w.close() == path
    assert w.close() == path
    w.abort()  # no effect after close
    assert len(_probe(path)["frames"]) == 1
    with pytest.raises(ValueError, match="closed"):
        w.write(_frame(1))


def test_creates_missing_parents(tmp_path):
    path = tmp_path / "a" / "b" / "out.mp4"
    _write(path, 2, preset="ultrafast")
    assert len(_probe(path)["frames"]) == 2


def test_no_frames(tmp_path):
    path = tmp_path / "empty.mp4"
    w = _mp4(path)
    with pytest.raises(ValueError, match="no frames"):
        w.close()
    assert os.listdir(tmp_path) == []


def test_unwritable_locations(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for path in (blocker / "out.mp4", blocker / "deeper" / "out.mp4"):
        with pytest.raises(OutputError, match="Not a directory") as info:
            _mp4(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value, OSError)
    with pytest.raises(OutputError, match="Is a directory") as info:
        _mp4(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(OutputError, match="Not a directory"):
        FrameFolderSink(blocker)
    with pytest.raises(OutputError, match="Not a directory"):
        FrameFolderSink(blocker / "frames")
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def test_encoder_failure(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(OutputError, match="encoding failed") as info:
        with _mp4(path, preset="ultrafast") as w:
            w.write(np.zeros((2, 17000, 3), np.uint8))  # wider than libx264 accepts
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def _disk_full(monkeypatch, *, now: bool) -> dict:
    """Make every output write fail with ENOSPC once ``state['full']`` is true."""
    state = {"full": now}
    real = PartFile.write

    def write(self, data):
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(PartFile, "write", write)
    return state


def test_disk_full_at_close(tmp_path, monkeypatch):
    state = _disk_full(monkeypatch, now=False)
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    w = _mp4(path, audio=_tone(0.4))
    for i in range(5):
        w.write(_frame(i))
    state["full"] = True
    with pytest.raises(OutputError, match="No space left") as info:
        w.close()
    assert str(path) in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def test_disk_full_while_writing(tmp_path, monkeypatch):
    _disk_full(monkeypatch, now=True)
    path = tmp_path / "out.mp4"
    rng = np.random.default_rng(0)
    with pytest.raises(OutputError, match="No space left"):
        with _mp4(path, preset="ultrafast", threads=1) as w:
            for _ in range(100):  # noise: big packets reach the file within a few frames
                w.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    assert 0 < w.frames_written < 100
    assert os.listdir(tmp_path) == []


def test_disk_full_frame_folder(tmp_path, monkeypatch):
    state = _disk_full(monkeypatch, now=False)
    folder = tmp_path / "frames"
    w = FrameFolderSink(folder)
    w.write(_frame(0))
    state["full"] = True
    with pytest.raises(OutputError, match="No space left") as info:
        w.write(_frame(1))
    assert str(folder) in str(info.value)
    assert os.listdir(tmp_path) == []


def test_bad_frames(tmp_path):
    for writer in (_mp4(tmp_path / "v.mp4", preset="ultrafast"), FrameFolderSink(tmp_path / "f")):
        with writer as w:
            with pytest.raises(ValueError, match="uint8"):
                w.write(_frame(0).astype(np.float32))
            with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
                w.write(_frame(0)[..., 0])
            with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
                w.write(np.zeros((240, 320, 4), np.uint8))
            w.write(_frame(0))
            with pytest.raises(ValueError, match="differs from the first"):
                w.write(_frame(1, 240, 322))
            w.write(_frame(1)[:, ::-1])  # non-contiguous is fine
            assert w.frames_written == 2
    assert len(_probe(tmp_path / "v.mp4")["frames"]) == 2
    assert sorted(os.listdir(tmp_path / "f")) == ["frame_00000.png", "frame_00001.png"]


def test_bad_arguments(tmp_path):
    for kw in (
        {"fps": 0},
        {"fps": float("nan")},
        {"crf": 52},
        {"preset": "quick"},
        {"threads": -1},
        {"audio": np.zeros((10, 2), np.float32)},
        {"audio": np.zeros(0, np.float32)},
        {"audio": np.full(10, np.nan, np.float32)},
        {"audio": _tone(0.1), "track_sample_rate": 12345},
        {"audio": _tone(0.1), "sample_rate": 0},
        {"frame_audio": True, "track_sample_rate": 12345},
    ):
        with pytest.raises(ValueError):
            _mp4(tmp_path / "x.mp4", **kw)
    with pytest.raises(ValueError):
        FrameFolderSink(tmp_path / "f", ext="bmp")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_frame_folder(tmp_path, ext):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):  # an earlier, longer run
        (folder / f"frame_{i:05d}.{ext}").write_bytes(b"old")
    (folder / "frame_00009.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("keep")
    frames = [_frame(i, 48, 64) for i in range(3)]
    with FrameFolderSink(folder, ext=ext) as w:
        for f in frames:
            w.write(f)
        assert [n for n in os.listdir(folder) if n.startswith("frame_")] != []  # old ones until close
    assert w.frames_written == 3
    names = sorted(os.listdir(folder))
    assert names == [f"frame_{i:05d}.{ext}" for i in range(3)] + ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep"
    assert os.listdir(tmp_path) == ["frames"]
    for i, f in enumerate(frames):
        back = cv2.imread(str(folder / f"frame_{i:05d}.{ext}"))
        if ext == "png":
            assert np.array_equal(back, f)
        else:
            assert np.abs(back.astype(int) - f).mean() < 3


def test_frame_folder_new_and_aborted(tmp_path):
    folder = tmp_path / "a" / "frames"
    with FrameFolderSink(folder, ext=".JPEG", jpeg_quality=80) as w:
        w.write(_frame(0, 16, 16))
    assert os.listdir(folder) == ["frame_00000.jpg"]
    with pytest.raises(RuntimeError):
        with FrameFolderSink(folder) as w:
            w.write(_frame(0, 16, 16))
            raise RuntimeError
    assert os.listdir(folder) == ["frame_00000.jpg"]  # untouched
    assert os.listdir(tmp_path / "a") == ["frames"]  # no temp folder
    w = FrameFolderSink(tmp_path / "b" / "frames")
    w.write(_frame(0, 16, 16))
    del w
    gc.collect()
    assert os.listdir(tmp_path) == ["a"]


def test_colour_is_bt601_limited_range_and_tagged(tmp_path):
    """Frames go to yuv420p as BT.601 limited range (OpenCV's I420) and the
    stream says so, so players do not assume BT.709 for HD sizes."""
    path = tmp_path / "c.mp4"
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, :32] = (30, 120, 200)
    frame[:, 32:] = (200, 60, 20)
    with _mp4(path, crf=0, preset="ultrafast") as w:
        w.write(frame)
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_range) == (6, 1)  # SMPTE 170M (BT.601), MPEG (limited) range
        decoded = next(c.decode(video=0))
    yuv = decoded.to_ndarray(format="yuv420p")
    assert np.abs(yuv.astype(int) - cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)).max() <= 1  # lossless at CRF 0


def test_libx264_uses_frame_threads_over_the_cores_this_process_may_use(tmp_path, monkeypatch):
    monkeypatch.setattr(_mp4_module, "cpu_cores", lambda: 3)  # e.g. a container with --cpus 3 on a large host
    with _mp4(tmp_path / "a.mp4") as w:
        cc = w._vstream.codec_context
        assert (cc.thread_count, str(cc.thread_type).split(".")[-1]) == (3, "FRAME")
        w.write(_frame(0))
    with _mp4(tmp_path / "b.mp4", threads=1) as w:
        assert w._vstream.codec_context.thread_count == 1
        w.write(_frame(0))
    assert len(_probe(tmp_path / "a.mp4")["frames"]) == 1


def test_encoder_choice(tmp_path):
    with pytest.raises(ValueError, match="encoder must be 'auto' or one of h264_nvenc, libx264"):
        _mp4(tmp_path / "x.mp4", encoder="x265")
    auto = resolve_encoder("auto")
    assert auto == ("h264_nvenc" if encoder_problem("h264_nvenc") is None else "libx264")
    _write(tmp_path / "auto.mp4", 5, encoder="auto")
    assert len(_probe(tmp_path / "auto.mp4")["frames"]) == 5
    assert encoder_problem("libx264") is None
    assert encoder_problem("not_a_codec") == "not in this PyAV build"


def test_nvenc_options_follow_crf_and_preset():
    assert _encoders._encoder_options("h264_nvenc", 23, "veryfast") == {
        "preset": "p3",
        "tune": "hq",
        "rc": "vbr",
        "cq": "23",
        "b": "0",
    }
    assert _encoders._encoder_options("h264_nvenc", 0, "medium") == {"preset": "p5", "tune": "lossless"}
    assert set(_encoders._NVENC_PRESETS) == set(X264_PRESETS)
    assert _encoders._encoder_options("libx264", 20, "superfast") == {"crf": "20", "preset": "superfast"}


@pytest.mark.skipif(encoder_problem("h264_nvenc") is None, reason="this machine has a working NVENC")
def test_an_encoder_that_cannot_run_here_is_one_line_and_creates_nothing(tmp_path):
    with pytest.raises(OutputError) as info:
        _mp4(tmp_path / "sub" / "x.mp4", encoder="h264_nvenc")
    message = str(info.value)
    assert message.startswith("encoder h264_nvenc cannot run here: ") and "\n" not in message
    assert "--encoder libx264" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(encoder_problem("h264_nvenc") is not None, reason="no working NVENC here")
def test_nvenc_writes_a_playable_mp4(tmp_path):
    frames = _write(tmp_path / "nv.mp4", 30, encoder="h264_nvenc", audio=_tone(1.2))
    info = _probe(tmp_path / "nv.mp4")
    assert (info["codec"], len(info["frames"])) == ("h264", 30)
    assert np.abs(info["frames"][-1].astype(int) - frames[-1]).mean() < 3


# ---------------------------------------------------------------- one writer, old names


def _frames_into(sink, n: int = 12, *, per_frame: np.ndarray | None = None):
    hop = SR // 25
    with sink as w:
        for i in range(n):
            w.write(_frame(i, 48, 64), None if per_frame is None else per_frame[i * hop : (i + 1) * hop])
    return sink.path


def test_mp4sink_is_the_one_writer_and_videowriter_a_deprecated_name_for_it(tmp_path):
    assert issubclass(VideoWriter, Mp4Sink) and issubclass(FrameFolderWriter, FrameFolderSink)
    assert video.VideoWriter is VideoWriter and video.FrameFolderWriter is FrameFolderWriter
    assert VideoWriter.__mro__[1] is Mp4Sink and FrameFolderWriter.__mro__[1] is FrameFolderSink
    # the old module's other public names are the sinks' own
    assert (video.ENCODERS, video.DEFAULT_ENCODER, video.X264_PRESETS, video.DEFAULT_PRESET) == (
        ENCODERS,
        DEFAULT_ENCODER,
        X264_PRESETS,
        DEFAULT_PRESET,
    )
    assert video.encoder_problem is encoder_problem and video.resolve_encoder is resolve_encoder
    tone = _tone(0.6)
    # VideoWriter's sample_rate is the stored track's (default 16000), audio_rate the input's
    for old, new in [
        ({}, {"track_sample_rate": SR}),
        ({"sample_rate": 48000, "audio_rate": SR}, {}),
        ({"sample_rate": 44100}, {"sample_rate": 44100, "track_sample_rate": 44100}),
    ]:
        with pytest.warns(DeprecationWarning, match="VideoWriter is deprecated; use synctalk_fast.sinks.Mp4Sink"):
            w = VideoWriter(tmp_path / "old.mp4", audio=tone, preset="ultrafast", **old)
        assert isinstance(w, Mp4Sink)
        a = _frames_into(w).read_bytes()
        b = _frames_into(Mp4Sink(tmp_path / "new.mp4", audio=tone, preset="ultrafast", **new)).read_bytes()
        assert a == b, old
    with pytest.warns(DeprecationWarning):
        live = VideoWriter(tmp_path / "old.mp4", frame_audio=True, audio_rate=SR, sample_rate=48000, threads=1)
    a = _frames_into(live, per_frame=tone).read_bytes()
    b = _frames_into(Mp4Sink(tmp_path / "new.mp4", frame_audio=True, threads=1), per_frame=tone).read_bytes()
    assert a == b
    with pytest.warns(DeprecationWarning, match="FrameFolderWriter is deprecated"):
        folder = FrameFolderWriter(tmp_path / "old", ext="jpg", jpeg_quality=80)
    _frames_into(folder, 3)
    _frames_into(FrameFolderSink(tmp_path / "new", ext="jpg", jpeg_quality=80), 3)
    assert [p.read_bytes() for p in sorted((tmp_path / "old").iterdir())] == [
        p.read_bytes() for p in sorted((tmp_path / "new").iterdir())
    ]


def test_mp4sink_renamed_rate_keywords_still_work(tmp_path):
    tone = _tone(0.6)
    with pytest.warns(DeprecationWarning, match=r"Mp4Sink\(audio_rate=...\) is deprecated; use sample_rate="):
        with pytest.warns(DeprecationWarning, match=r"Mp4Sink\(track_rate=...\) is deprecated; use track_sample_rate="):
            old = Mp4Sink(tmp_path / "old.mp4", audio=tone, audio_rate=SR, track_rate=44100, preset="ultrafast")
    new = Mp4Sink(tmp_path / "new.mp4", audio=tone, sample_rate=SR, track_sample_rate=44100, preset="ultrafast")
    assert _frames_into(old).read_bytes() == _frames_into(new).read_bytes()
    assert _probe(tmp_path / "new.mp4")["audio"][0][2] == 44100
    with pytest.raises(TypeError, match="unexpected keyword argument 'rate'"):
        Mp4Sink(tmp_path / "x.mp4", rate=SR)
    assert sorted(os.listdir(tmp_path)) == ["new.mp4", "old.mp4"]
