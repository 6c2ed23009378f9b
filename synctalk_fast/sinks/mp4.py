"""The MP4 sink: H.264 + AAC written in one pass with PyAV, never partial.

:class:`Mp4Sink` is the package's one video writer (the CLI, the pipeline,
replay and the benchmark all write through it). Frames are encoded as they
arrive (nothing is held in memory); the sound (a whole track, or samples
arriving with the frames: :mod:`.audio_track`) is encoded alongside, so
audio and video packets are interleaved in time order. The file appears at
its path only when :meth:`Mp4Sink.close` succeeds (see :mod:`~synctalk_fast.sinks.base` for the
no-partial-output invariant). Not thread-safe.
"""

from __future__ import annotations

import os
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from .._filters import SAMPLE_RATE
from .._util.atomic import PartFile, make_dirs, remove_dirs
from .._util.deprecation import renamed
from .._util.system import cpu_cores
from .audio_track import AAC_SAMPLE_RATES, TRACK_SAMPLE_RATE, LiveTrack, WholeTrack, check_audio
from .base import _check_frame, _output_error, _Writer
from .encoders import DEFAULT_ENCODER, DEFAULT_PRESET, _check_encoding, _encoder_options, resolve_encoder

__all__ = ["Mp4Sink"]

# Keywords renamed when VideoWriter and Mp4Sink became one class: old -> new.
_RENAMED = {"audio_rate": "sample_rate", "track_rate": "track_sample_rate"}


class _VideoPart:
    """What must be released and deleted if a video is not finished: no reference to the sink."""

    def __init__(self, file: PartFile, created: list[Path]):
        self.file = file
        self.created = created
        self.container: Any = None

    def discard(self) -> None:
        try:
            if self.container is not None:
                container, self.container = self.container, None
                try:
                    container.close()
                except Exception:  # the file is deleted anyway
                    pass
        finally:
            try:
                self.file.close()
            except OSError:
                pass
            try:
                os.unlink(self.file.path)
            except OSError:
                pass
            remove_dirs(self.created)


class Mp4Sink(_Writer):
    """An MP4 file (H.264 + AAC) with its sound, written atomically.

    The sound comes from one of two places, chosen here:

    - ``audio=``: the whole track, given at once; the per-frame ``audio``
      of :meth:`write` is ignored.
    - ``frame_audio=True``: each :meth:`write` brings the samples shown with
      its frame (required there), and they become the track as they arrive
      (as :class:`~synctalk_fast.Stream` delivers them).

    With neither, the file has no sound and the per-frame ``audio`` of
    :meth:`write` is ignored.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (the container is MP4 whatever the suffix); missing
        parent directories are created. The file appears at :meth:`close`.
    fps : float or Fraction, default 25.0
        Frame rate, > 0. Floats are turned into the nearest fraction with
        a denominator <= 1001, so 25 gives exactly 1/25 s per frame and
        29.97002997 gives 30000/1001.
    crf : int, default 20
        libx264 constant rate factor, 0 (lossless) to 51.
    preset : str, default "superfast"
        libx264 preset, one of :data:`~synctalk_fast.sinks.X264_PRESETS`
        (:data:`~synctalk_fast.sinks.DEFAULT_PRESET`).
    encoder : str, default "libx264"
        One of :data:`~synctalk_fast.sinks.ENCODERS` (``"h264_nvenc"`` on an
        NVIDIA GPU with a hardware encoder) or ``"auto"`` (the first of them
        that opens here). ``crf`` and ``preset`` map onto NVENC's constant
        quality and p1..p7.
    audio : np.ndarray or None
        The whole track: mono samples in [-1, 1] (1-D float; values outside
        are clipped) at ``sample_rate``.
    sample_rate : int, default 16000
        Sample rate of the sound given (``audio``, or per frame);
        ``audio_rate=`` is its deprecated name.
    track_sample_rate : int, default :data:`~synctalk_fast.sinks.TRACK_SAMPLE_RATE` (48000)
        Sample rate of the AAC track stored in the file, one the AAC format
        supports (8000, 16000, 22050, 44100, 48000, ...); the sound is
        resampled (soxr, HQ) block by block as it is encoded, so only the
        input array is ever held in memory. ``track_rate=`` is its
        deprecated name.
    frame_audio : bool, default False
        Take the track from the frames' ``audio`` instead.
    threads : int, default 0
        libx264 threads (frame-parallel: throughput scales with cores);
        0 uses the cores this process may use (container limits included).

    Raises
    ------
    OutputError
        The destination cannot be written (checked here by creating the
        temporary file): missing parent that cannot be created, permission
        denied, ``path`` is a directory; or the encoder (see
        :func:`~synctalk_fast.sinks.encoder_problem`) or AAC is unavailable.
    ValueError
        A bad argument, or both ``audio`` and ``frame_audio=True``.

    Notes
    -----
    yuv420p needs an even width and height: a frame with an odd width or
    height is padded by one column/row that repeats its last column/row,
    so a 321x241 input gives a 322x242 video.

    The video has exactly :attr:`frames_written` frames and lasts
    ``frames_written / fps`` seconds. The audio stream lasts as long as the
    sound whether the video is shorter or longer; its container duration
    is exact, but decoders return whole AAC frames of 1024 samples, so the
    decoded audio may run up to 1023 samples of silence longer.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | Fraction = 25.0,
        crf: int = 20,
        preset: str = DEFAULT_PRESET,
        encoder: str = DEFAULT_ENCODER,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
        track_sample_rate: int = TRACK_SAMPLE_RATE,
        frame_audio: bool = False,
        threads: int = 0,
        **deprecated: Any,
    ):
        if deprecated:
            given = renamed(
                deprecated, {"sample_rate": None, "track_sample_rate": None}, _RENAMED, where=type(self).__name__
            )
            sample_rate = given["sample_rate"] or sample_rate
            track_sample_rate = given["track_sample_rate"] or track_sample_rate
        self._dest = Path(os.fspath(path))
        self._rate = _check_encoding(fps, crf, preset, encoder)
        self.encoder = resolve_encoder(encoder)  # before the part file: an unusable encoder creates nothing
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        if audio is not None and frame_audio:
            raise ValueError("give audio= or frame_audio=True, not both")
        if (audio is not None or frame_audio) and track_sample_rate not in AAC_SAMPLE_RATES:
            raise ValueError(
                f"track_sample_rate {track_sample_rate!r} is not an AAC sample rate "
                f"({', '.join(map(str, AAC_SAMPLE_RATES))})"
            )
        self._track_rate = int(track_sample_rate)
        self._audio: WholeTrack | LiveTrack | None = None
        if audio is not None:
            self._audio = WholeTrack(check_audio(audio), int(sample_rate), self._track_rate)
        elif frame_audio:
            self._audio = LiveTrack(int(sample_rate), self._track_rate)
        self._apos = 0  # audio samples handed to the encoder so far

        part = _VideoPart(*self._create_part())
        self._discard = weakref.finalize(self, part.discard)
        self._part = part
        try:
            self._open_streams(av.open(part.file, "w", format="mp4"), crf, preset, threads)
        except BaseException as exc:
            raise self._fail(exc) from exc

    def _create_part(self) -> tuple[PartFile, list[Path]]:
        dest = self._dest
        try:
            if dest.is_dir():
                raise IsADirectoryError(21, os.strerror(21), os.fspath(dest))
            created = make_dirs(dest.parent)
            try:
                file = PartFile.create_in(dest.parent, dest)
            except BaseException:
                remove_dirs(created)
                raise
        except OSError as exc:
            raise _output_error(dest, exc) from exc
        return file, created

    def _open_streams(self, container: Any, crf: int, preset: str, threads: int) -> None:
        """Add the video stream (and the AAC one when there is sound) to ``container``."""
        self._part.container = container
        encoder = self.encoder
        self._vstream = container.add_stream(encoder, rate=self._rate, options=_encoder_options(encoder, crf, preset))
        self._vstream.pix_fmt = "yuv420p"
        if encoder == "libx264":
            # Frame threads, sized by the cores this process may use
            # (libx264's own count sees the host's, not the container's).
            self._vstream.codec_context.thread_type = "FRAME"
            self._vstream.codec_context.thread_count = int(threads) or cpu_cores()
        # Frames are converted as BT.601 limited range (see write); say so
        # in the stream, or players assume BT.709 for HD sizes.
        cc = self._vstream.codec_context
        cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = 6, 1, 6, 6  # SMPTE 170M, MPEG range
        self._astream: Any = None
        if self._audio is not None:
            astream = container.add_stream("aac", rate=self._track_rate)
            astream.layout = "mono"
            astream.format = "fltp"
            astream.codec_context.open()  # fixes frame_size; fails early on a bad rate
            self._astream = astream
            self._audio_frame = astream.codec_context.frame_size or 1024

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Encode one BGR uint8 ``[H, W, 3]`` frame (and, with ``frame_audio=True``, its sound).

        The first frame fixes the size. ``audio``: with ``frame_audio=True``,
        the mono samples shown with this frame (required there); ignored
        otherwise.

        Raises
        ------
        ValueError
            Wrong dtype or shape, a size other than the first frame's,
            ``audio`` missing with ``frame_audio=True``, or the sink is
            closed or aborted. The sink stays usable after a bad frame.
        OutputError
            Writing or encoding failed; the sink is aborted.
        """
        self._check_open()
        frame = _check_frame(frame, self._shape)
        live = self._audio if isinstance(self._audio, LiveTrack) else None
        if live is not None:
            if audio is None:
                raise ValueError("a sink with frame_audio=True takes each frame's samples: write(frame, audio)")
            audio = check_audio(audio)
        try:
            if live is not None and audio is not None:
                live.append(audio)
            self._encode_frame(frame)
            if self._audio is not None:
                # Invariant: audio is encoded through the end of the last frame written,
                # ceil(frames * sample_rate / fps) samples (rounded up to whole AAC frames).
                end = -((-self._frames * self._track_rate * self._rate.denominator) // self._rate.numerator)
                self._encode_audio(min(end, self._audio.length))
        except BaseException as exc:
            raise self._fail(exc) from exc

    def _encode_frame(self, frame: np.ndarray) -> None:
        """Convert a checked frame to yuv420p (padded to even sizes) and mux its packets."""
        h, w = frame.shape[:2]
        if self._shape is None:
            self._vstream.width = w + (w & 1)
            self._vstream.height = h + (h & 1)
        if (h | w) & 1:
            frame = cv2.copyMakeBorder(frame, 0, h & 1, 0, w & 1, cv2.BORDER_REPLICATE)
        # BT.601 limited range, as swscale's default; OpenCV converts in
        # ~0.2 ms where PyAV's bgr24 -> yuv420p path takes ~5 ms at 720p,
        # and its chroma is the 2x2 mean (closer to the source).
        yuv: Any = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
        vframe = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        vframe.pts = self._frames
        vframe.time_base = 1 / self._rate
        self._part.container.mux(self._vstream.encode(vframe))
        if self._shape is None:
            self._shape = (h, w, 3)
        self._frames += 1

    def _encode_audio(self, end: int) -> None:
        """Encode audio samples up to ``end`` (or the next frame boundary past it)."""
        audio, size, container = self._audio, self._audio_frame, self._part.container
        assert audio is not None
        if isinstance(audio, LiveTrack) and not audio.last:  # whole AAC frames until the end is known
            end = self._apos + (min(end, audio.length) - self._apos) // size * size
        while self._apos < end:
            chunk = audio.take(size)  # shorter only at the end of the audio
            aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            aframe.sample_rate = self._track_rate
            aframe.pts = self._apos
            aframe.time_base = Fraction(1, self._track_rate)
            container.mux(self._astream.encode(aframe))
            self._apos += len(chunk)

    def close(self) -> Path:
        """Flush the encoders, finish the file and move it onto ``path``.

        Returns
        -------
        Path
            ``path``. Calling again after success returns it again.

        Raises
        ------
        OutputError
            Writing failed (e.g. disk full); nothing is left at ``path``
            (a previous file there is untouched).
        ValueError
            No frame was written (no video can be made; the sink is
            aborted), or the sink was aborted.
        """
        if self._closed:
            return self._dest
        self._check_open()
        if self._frames == 0:
            self.abort()
            raise ValueError(f"no frames written; nothing written to {os.fspath(self._dest)}")
        part = self._part
        try:
            container = part.container
            container.mux(self._vstream.encode(None))
            if self._audio is not None:
                if isinstance(self._audio, LiveTrack):
                    self._audio.append(np.zeros(0, np.float32), last=True)
                self._encode_audio(self._audio.length)
                container.mux(self._astream.encode(None))
            part.container = None
            container.close()
            part.file.sync()
            part.file.close()
            if self._dest.is_dir():
                raise IsADirectoryError(21, os.strerror(21), os.fspath(self._dest))
            os.replace(part.file.path, self._dest)
        except BaseException as exc:
            raise self._fail(exc) from exc
        self._closed = True
        self._discard.detach()
        self._audio = None
        return self._dest
