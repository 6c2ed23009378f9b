"""Stage 4: output frames -> an MP4 file (H.264 + AAC) or a folder of images.

No partial output, ever: a writer builds its output beside the destination
(a hidden ``.<name>.<random>.part`` file or folder in the same directory)
and moves it into place only when :meth:`VideoWriter.close` /
:meth:`FrameFolderWriter.close` succeeds. An exception, :meth:`abort`, a
``KeyboardInterrupt`` inside a ``with`` block, garbage collection of an
unclosed writer or interpreter exit deletes the temporary output instead
(and any parent directories the writer created), so the destination is
either the complete new output or exactly what it was before.

Both writers are sinks (:class:`~synctalk_fast.sinks.Sink`):
``write(frame, audio=None)``, ``close()``, ``abort()``.

Frames are BGR uint8 ``[H, W, 3]`` as OpenCV produces them. Problems writing
(unwritable location, full disk, encoder failure) raise
:class:`~synctalk_fast.errors.OutputError` naming the destination; bad frames
or arguments raise ``ValueError``. Writers are not thread-safe.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.logging
import cv2
import numpy as np

from ._util.atomic import PartFile, make_dirs, part_name, remove_dirs
from ._util.system import cpu_cores
from .audio import StreamResampler
from .errors import OutputError

__all__ = ["VideoWriter", "FrameFolderWriter", "OutputError", "X264_PRESETS", "DEFAULT_PRESET",
           "ENCODERS", "DEFAULT_ENCODER", "encoder_problem", "resolve_encoder"]

# Default libx264 preset, chosen by measurement (README, "Encoder preset"; 720p
# talking-head frames at CRF 20, one encoder thread): superfast costs 6.7 ms
# of CPU per frame (veryfast 10.4, medium 23.8) at 2.4 Mbit/s (veryfast 1.55,
# medium 1.64) and 47.1 dB PSNR (45.6, 47.8). On 2 cores every ms of encoding
# is taken from the U-Net: with superfast the MP4 pipeline keeps up with the
# naive loop that writes no video at all; with medium it runs at ~0.74 x the
# U-Net's own speed. Smaller files: preset="veryfast" (or "medium").
DEFAULT_PRESET = "superfast"
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
# The H.264 encoders a writer can use, hardware first: "auto" takes the first
# that opens here. libx264 is the default everywhere (the same bits on every
# machine); NVENC exists only on NVIDIA GPUs that have the encoder block
# (not A100 / H100 / H200).
ENCODERS = ("h264_nvenc", "libx264")
DEFAULT_ENCODER = "libx264"
# x264 speed presets -> NVENC's p1 (fastest) .. p7 (best).
_NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p3", "faster": "p4", "fast": "p4",
                  "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}
# Sample rates the AAC bitstream can signal (ISO 14496-3 sampling_frequency_index).
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_FRAME_NAME = re.compile(r"frame_\d+\.(?:png|jpg)")
# The same class object as ``_atomic.PartFile``: patching ``_PartFile.write``
# reaches every byte every writer writes.
_PartFile = PartFile


def _output_error(dest: Path, exc: BaseException) -> OutputError:
    """One-line ``OutputError`` for ``exc`` while writing ``dest``, keeping its errno."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    reason = " ".join(str(reason).split())
    if isinstance(exc, av.error.FFmpegError) and not isinstance(exc, OSError):
        reason = f"encoding failed ({reason})"
    err = OutputError(f"cannot write {os.fspath(dest)}: {reason}")
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        err.errno = code
    return err


def _check_frame(frame: Any, first_shape: tuple[int, ...] | None) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 BGR, got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must have shape [H, W, 3] (BGR), got {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty: shape {frame.shape}")
    if first_shape is not None and frame.shape != first_shape:
        raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's {first_shape[1]}x{first_shape[0]}")
    return np.ascontiguousarray(frame)


class _Writer:
    """Shared state machine: open -> (closed | aborted); abort is idempotent.

    Invariant: while open, ``self._discard`` is a live finalizer that deletes
    the temporary output; it is detached only after the output is in place.
    """

    _dest: Path
    _discard: weakref.finalize
    _closed = False
    _frames = 0
    _shape: tuple[int, ...] | None = None

    @property
    def frames_written(self) -> int:
        """Number of frames accepted by :meth:`write` so far."""
        return self._frames

    @property
    def path(self) -> Path:
        """The destination."""
        return self._dest

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} for {os.fspath(self._dest)} is already closed")
        if not self._discard.alive:
            raise ValueError(f"{type(self).__name__} for {os.fspath(self._dest)} was aborted; nothing was written")

    def _fail(self, exc: BaseException) -> BaseException:
        """Abort, and map I/O and encoder errors to ``OutputError``; return what to raise."""
        self.abort()
        if isinstance(exc, (OSError, av.error.FFmpegError)) and not isinstance(exc, OutputError):
            return _output_error(self._dest, exc)
        return exc

    def abort(self) -> None:
        """Stop and delete the temporary output; the destination is left untouched.

        Does nothing after :meth:`close` succeeded or a previous abort.
        """
        if not self._closed:
            self._discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        elif not self._closed and self._discard.alive:
            self.close()
        return False

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> Path:  # pragma: no cover - overridden
        raise NotImplementedError


class _VideoPart:
    """What must be released and deleted if a video is not finished: no reference to the writer."""

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


class VideoWriter(_Writer):
    """MP4 (H.264 + AAC) written in one pass with PyAV.

    Frames are encoded as they arrive (nothing is held in memory); the audio
    is encoded alongside so audio and video packets are interleaved in time
    order. The file appears at ``path`` only when :meth:`close` succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.mp4`` (the container is MP4 whatever the suffix).
        Missing parent directories are created.
    fps : float or Fraction, default 25.0
        Frame rate, > 0. Floats are turned into the nearest fraction with
        a denominator <= 1001, so 25 gives exactly 1/25 s per frame and
        29.97002997 gives 30000/1001.
    crf : int, default 20
        libx264 constant rate factor, 0 (lossless) to 51.
    preset : str, default "superfast"
        libx264 preset, one of :data:`X264_PRESETS` (:data:`DEFAULT_PRESET`).
    audio_rate : int, optional
        Sample rate of ``audio`` when it differs from ``sample_rate``: the
        samples are then resampled (soxr, HQ) block by block as they are
        encoded, so only the input array is ever held in memory.
    audio : np.ndarray or None
        Mono samples in [-1, 1] (1-D float; values outside are clipped) at
        ``sample_rate``, encoded as AAC. None writes a video-only file.
    sample_rate : int, default 16000
        Sample rate of ``audio``; one the AAC format supports (8000, 16000,
        22050, 44100, 48000, ...).
    encoder : str, default "libx264"
        One of :data:`ENCODERS` (``"h264_nvenc"`` on an NVIDIA GPU with a
        hardware encoder) or ``"auto"`` (the first of them that opens here).
        ``crf`` and ``preset`` map onto NVENC's constant quality and p1..p7.
    threads : int, default 0
        libx264 threads (frame-parallel: throughput scales with cores);
        0 uses the cores this process may use (container limits included).
    frame_audio : bool, default False
        The sound track comes with the frames instead of ``audio``: each
        :meth:`write` takes the samples shown with its frame
        (``write(frame, audio=samples)``, mono at ``audio_rate``), as a
        :class:`~synctalk_fast.Stream` delivers them. It is encoded as it
        arrives.

    Raises
    ------
    OutputError
        The destination cannot be written (checked here by creating the
        temporary file): missing parent that cannot be created, permission
        denied, ``path`` is a directory; or the encoder (see
        :func:`encoder_problem`) or AAC is unavailable.
    ValueError
        A bad argument.

    Notes
    -----
    yuv420p needs an even width and height: a frame with an odd width or
    height is padded by one column/row that repeats its last column/row,
    so a 321x241 input gives a 322x242 video.

    The video has exactly :attr:`frames_written` frames and lasts
    ``frames_written / fps`` seconds. The audio stream lasts as long as
    ``audio`` whether the video is shorter or longer; its container duration
    is exact, but decoders return whole AAC frames of 1024 samples, so the
    decoded audio may run up to 1023 samples (64 ms at 16 kHz) of silence
    longer.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float | Fraction = 25.0,
        crf: int = 20,
        preset: str = DEFAULT_PRESET,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        audio_rate: int | None = None,
        threads: int = 0,
        frame_audio: bool = False,
        encoder: str = DEFAULT_ENCODER,
    ):
        self._dest = Path(os.fspath(path))
        self._rate = _check_encoding(fps, crf, preset, encoder)
        encoder = resolve_encoder(encoder)  # before the part file: an unusable encoder creates nothing
        self.encoder = encoder
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        if audio is not None and frame_audio:
            raise ValueError("give audio= or frame_audio=True, not both")
        if (audio is not None or frame_audio) and sample_rate not in _AAC_RATES:
            raise ValueError(f"sample_rate {sample_rate!r} is not an AAC sample rate ({', '.join(map(str, _AAC_RATES))})")
        self._sample_rate = int(sample_rate)
        self._audio = None if audio is None else _AudioSource(_check_audio(audio), int(audio_rate or sample_rate), self._sample_rate)
        if frame_audio:
            self._audio = _LiveAudio(int(audio_rate or sample_rate), self._sample_rate)
        self._apos = 0  # audio samples handed to the encoder so far

        part = _VideoPart(*self._create_part())
        self._discard = weakref.finalize(self, part.discard)
        self._part = part
        try:
            container = av.open(part.file, "w", format="mp4")
            part.container = container
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
            self._astream = None
            if self._audio is not None:
                astream = container.add_stream("aac", rate=self._sample_rate)
                astream.layout = "mono"
                astream.format = "fltp"
                astream.codec_context.open()  # fixes frame_size; fails early on a bad rate
                self._astream = astream
                self._audio_frame = astream.codec_context.frame_size or 1024
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

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Encode one BGR uint8 ``[H, W, 3]`` frame; the first frame fixes the size.

        ``audio``: with ``frame_audio=True``, the mono samples shown with this
        frame (required there, refused otherwise).

        Raises
        ------
        ValueError
            Wrong dtype or shape, a size other than the first frame's, or the
            writer is closed. The writer stays usable after a bad frame.
        OutputError
            Writing or encoding failed; the writer is aborted.
        """
        self._check_open()
        frame = _check_frame(frame, self._shape)
        live = isinstance(self._audio, _LiveAudio)
        if (audio is not None) != live:
            raise ValueError("write(frame, audio=...) takes audio exactly when the writer has frame_audio=True")
        if live:
            audio = _check_audio(audio)
        try:
            if live:
                self._audio.append(audio)
            h, w = frame.shape[:2]
            if self._shape is None:
                self._vstream.width = w + (w & 1)
                self._vstream.height = h + (h & 1)
            if (h | w) & 1:
                frame = cv2.copyMakeBorder(frame, 0, h & 1, 0, w & 1, cv2.BORDER_REPLICATE)
            # BT.601 limited range, as swscale's default; OpenCV converts in
            # ~0.2 ms where PyAV's bgr24 -> yuv420p path takes ~5 ms at 720p,
            # and its chroma is the 2x2 mean (closer to the source).
            yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
            vframe = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            vframe.pts = self._frames
            vframe.time_base = 1 / self._rate
            container = self._part.container
            container.mux(self._vstream.encode(vframe))
            if self._shape is None:
                self._shape = (h, w, 3)
            self._frames += 1
            if self._audio is not None:
                # Invariant: audio is encoded through the end of the last frame written,
                # ceil(frames * sr / fps) samples (rounded up to whole AAC frames).
                end = -((-self._frames * self._sample_rate * self._rate.denominator) // self._rate.numerator)
                self._encode_audio(min(end, self._audio.length))
        except BaseException as exc:
            raise self._fail(exc) from exc

    def _encode_audio(self, end: int) -> None:
        """Encode audio samples up to ``end`` (or the next frame boundary past it)."""
        audio, size, container = self._audio, self._audio_frame, self._part.container
        if isinstance(audio, _LiveAudio) and not audio.last:  # whole AAC frames until the end is known
            end = self._apos + (min(end, audio.length) - self._apos) // size * size
        while self._apos < end:
            chunk = audio.take(size)  # shorter only at the end of the audio
            aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            aframe.sample_rate = self._sample_rate
            aframe.pts = self._apos
            aframe.time_base = Fraction(1, self._sample_rate)
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
            No frame was written (no video can be made; the writer is
            aborted), or the writer was aborted.
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
                if isinstance(self._audio, _LiveAudio):
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


def _check_encoding(fps: Any, crf: Any, preset: Any, encoder: Any = DEFAULT_ENCODER) -> Fraction:
    """The frame rate of ``fps``; ``ValueError`` for a bad ``fps``, ``crf``, ``preset`` or encoder name."""
    rate = _frame_rate(fps)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
    if preset not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}; got {preset!r}")
    if encoder != "auto" and encoder not in ENCODERS:
        raise ValueError(f"encoder must be 'auto' or one of {', '.join(ENCODERS)}; got {encoder!r}")
    return rate


def _encoder_options(encoder: str, crf: int, preset: str) -> dict[str, str]:
    """The codec options of ``encoder`` for an x264-style ``crf`` and ``preset``."""
    if encoder == "h264_nvenc":
        if int(crf) == 0:
            return {"preset": _NVENC_PRESETS[preset], "tune": "lossless"}
        # constant quality: rate control vbr with no bit-rate target
        return {"preset": _NVENC_PRESETS[preset], "tune": "hq", "rc": "vbr", "cq": str(int(crf)), "b": "0"}
    return {"crf": str(int(crf)), "preset": preset}


@functools.lru_cache(maxsize=None)
def encoder_problem(encoder: str) -> str | None:
    """Why ``encoder`` cannot encode on this machine, or None when it can.

    Opens the encoder on a small frame and encodes it (once per process):
    a hardware encoder in the build is no use without the device and
    driver behind it.

    Parameters
    ----------
    encoder : str
        One of :data:`ENCODERS`.

    Returns
    -------
    str or None
        A one-line reason, e.g. ``"not in this PyAV build"`` or FFmpeg's
        own message (no NVENC-capable device, driver missing).
    """
    try:
        cc = av.CodecContext.create(encoder, "w")
    except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError / ValueError by version
        return "not in this PyAV build"
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # FFmpeg logs the reason (e.g. "Cannot load libcuda.so.1"); the exception does not
    try:
        with av.logging.Capture(local=False) as logs:
            cc.width, cc.height, cc.pix_fmt = 256, 256, "yuv420p"
            cc.time_base, cc.framerate = Fraction(1, 25), Fraction(25)
            cc.options = _encoder_options(encoder, 20, DEFAULT_PRESET)
            cc.open()
            frame = av.VideoFrame.from_ndarray(np.zeros((384, 256), np.uint8), format="yuv420p")
            frame.pts = 0
            cc.encode(frame)
            cc.encode(None)
    except Exception as exc:  # noqa: BLE001 - any failure means this encoder cannot be used here
        reason = logs[-1][2] if logs else str(exc)
        return " ".join(reason.split()) or type(exc).__name__
    finally:
        av.logging.set_level(level)
    return None


def resolve_encoder(encoder: str = DEFAULT_ENCODER) -> str:
    """The encoder to use for ``encoder`` (``"auto"`` or a name of :data:`ENCODERS`).

    Raises
    ------
    ValueError
        An unknown name.
    OutputError
        The named encoder cannot run here (the reason, and the way out).
    """
    if encoder == "auto":
        return next(name for name in ENCODERS if name == DEFAULT_ENCODER or encoder_problem(name) is None)
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be 'auto' or one of {', '.join(ENCODERS)}; got {encoder!r}")
    problem = encoder_problem(encoder)
    if problem is not None:
        raise OutputError(f"encoder {encoder} cannot run here: {problem}; use encoder {DEFAULT_ENCODER!r} (--encoder {DEFAULT_ENCODER})")
    return encoder


def _frame_rate(fps: Any) -> Fraction:
    if isinstance(fps, Fraction):
        rate = fps
    else:
        try:
            value = float(fps)
        except (TypeError, ValueError):
            raise ValueError(f"fps must be a positive number, got {fps!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        rate = Fraction(value).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return rate


class _AudioSource:
    """A whole track as mono float32 samples at the output rate, read front to back in blocks.

    ``length`` is ``int(round(n * out_rate / in_rate))`` for ``n`` input
    samples; where the resampler yields fewer, the end is padded with
    silence (and samples past ``length`` are never read).

    Invariant: only the input array is held; with another input rate, blocks
    are resampled as they are read, so a long track never exists at the
    output rate in memory.
    """

    _BLOCK = 8192  # input samples per resampler call

    def __init__(self, samples: np.ndarray, in_rate: int, out_rate: int):
        self._x = samples
        self._read = 0  # input samples pushed into the resampler
        self._emitted = 0
        self._resampler = StreamResampler(in_rate, out_rate)
        self._buf = np.zeros(0, np.float32)  # resampled, not yet taken
        self.length = int(round(len(samples) * out_rate / in_rate))

    def take(self, n: int) -> np.ndarray:
        """The next ``min(n, remaining)`` samples, float32 ``[m]``."""
        n = min(n, self.length - self._emitted)
        while len(self._buf) < n:
            if self._read < len(self._x):
                block = self._x[self._read : self._read + self._BLOCK]
                self._read += len(block)
                more = self._resampler.push(block)
                if self._read >= len(self._x):
                    more = np.concatenate([more, self._resampler.finish()])
            else:  # the resampler's rounding came up short: pad with silence
                more = np.zeros(n - len(self._buf), np.float32)
            self._buf = np.concatenate([self._buf, more])
        out, self._buf = self._buf[:n], self._buf[n:]
        self._emitted += n
        return out


class _LiveAudio:
    """Mono samples that arrive with the frames, resampled to the output rate as they come.

    ``length``: samples at the output rate available so far (all of them once
    ``last``).
    """

    def __init__(self, in_rate: int, out_rate: int):
        self._resampler = StreamResampler(in_rate, out_rate)
        self._buf = np.zeros(0, np.float32)  # resampled, not yet taken
        self.length = 0
        self.last = False

    def append(self, samples: np.ndarray, *, last: bool = False) -> None:
        """Add float32 ``[m]`` samples at the input rate; ``last`` ends the track."""
        more = self._resampler.push(samples)
        if last:
            more = np.concatenate([more, self._resampler.finish()])
        self._buf = np.concatenate([self._buf, more])
        self.length += len(more)
        self.last = last

    def take(self, n: int) -> np.ndarray:
        """The next ``min(n, available)`` samples."""
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _check_audio(audio: Any) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"audio must be mono: a 1-D array of samples, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == np.bool_:
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {a.dtype}")
    if len(a) == 0:
        raise ValueError("audio is empty; pass audio=None for a video-only file")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(np.clip(a, -1.0, 1.0))


class _FolderPart:
    """The temporary sibling folder of a :class:`FrameFolderWriter`: no reference to the writer."""

    def __init__(self, folder: Path, created: list[Path]):
        self.folder = folder
        self.created = created

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        remove_dirs(self.created)


class FrameFolderWriter(_Writer):
    """Frames as numbered images: ``frame_00000.png`` (or ``.jpg``) in a folder.

    Images are written into a hidden sibling folder (``.<name>.<random>.part``)
    and moved into ``folder`` at :meth:`close`. Afterwards ``folder`` holds
    exactly this run's ``frame_NNNNN.<ext>`` files: ``frame_<digits>.png`` /
    ``.jpg`` files left by an earlier run are removed; other files stay.

    Parameters
    ----------
    folder : str or os.PathLike
        Destination folder, created at :meth:`close` if missing (its missing
        parents are created at once, to check they can be).
    ext : {"png", "jpg"}, default "png"
        Image format (``"jpeg"`` and a leading dot are accepted). PNG is
        lossless.
    jpeg_quality : int, default 95
        JPEG quality 0..100 (ignored for PNG).

    Notes
    -----
    Names have at least five digits (``frame_100000`` follows
    ``frame_99999``). When ``folder`` does not exist, it appears in one
    rename; otherwise the images are renamed into it one by one (renames
    write no data, and both folders are checked writable at construction),
    so only a crash or a rename failing midway through :meth:`close` can
    leave a mix of old and new frames.
    """

    def __init__(self, folder: str | os.PathLike, *, ext: str = "png", jpeg_quality: int = 95):
        self._dest = Path(os.fspath(folder))
        e = str(ext).lower().lstrip(".")
        e = "jpg" if e == "jpeg" else e
        if e not in ("png", "jpg"):
            raise ValueError(f"ext must be 'png' or 'jpg', got {ext!r}")
        if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, (int, np.integer)) or not 0 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be an integer in 0..100, got {jpeg_quality!r}")
        self._ext = e
        self._params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if e == "jpg" else []
        dest = self._dest
        try:
            if os.path.lexists(dest) and not dest.is_dir():
                raise NotADirectoryError(20, os.strerror(20), os.fspath(dest))
            created = make_dirs(dest.parent)
            try:
                tmp = self._make_temp_folder(dest)
            except BaseException:
                remove_dirs(created)
                raise
        except OSError as exc:
            raise _output_error(dest, exc) from exc
        part = _FolderPart(tmp, created)
        self._part = part
        self._discard = weakref.finalize(self, part.discard)
        try:  # close() must be able to write in both folders
            for where in (tmp, dest) if dest.is_dir() else (tmp,):
                probe = PartFile.create_in(where, dest)
                probe.close()
                os.unlink(probe.path)
        except BaseException as exc:
            raise self._fail(exc) from exc

    @staticmethod
    def _make_temp_folder(dest: Path) -> Path:
        while True:
            tmp = dest.parent / part_name(dest)
            try:
                os.mkdir(tmp)
                return tmp
            except FileExistsError:
                continue

    def _name(self, index: int) -> str:
        return f"frame_{index:05d}.{self._ext}"

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Write one BGR uint8 ``[H, W, 3]`` frame as the next image.

        ``audio`` is ignored (images have no sound); it is accepted so that
        the writer is a :class:`~synctalk_fast.sinks.Sink`.

        Raises
        ------
        ValueError
            Wrong dtype or shape, a size other than the first frame's, or the
            writer is closed. The writer stays usable after a bad frame.
        OutputError
            Encoding or writing the image failed; the writer is aborted.
        """
        self._check_open()
        frame = _check_frame(frame, self._shape)
        name = self._name(self._frames)
        try:
            ok, buf = cv2.imencode("." + self._ext, frame, self._params)
            if not ok:
                raise OSError(f"cannot encode {name} as {self._ext.upper()}")
            file = PartFile(self._part.folder / name)
            try:
                file.write(buf)
            finally:
                file.close()
        except BaseException as exc:
            raise self._fail(exc) from exc
        self._shape = frame.shape
        self._frames += 1

    def close(self) -> Path:
        """Move the images into ``folder`` (created if needed) and remove stale frames.

        Returns
        -------
        Path
            ``folder``. Calling again after success returns it again.

        Raises
        ------
        OutputError
            The images cannot be moved into ``folder``; the temporary folder
            is deleted.
        ValueError
            The writer was aborted.
        """
        if self._closed:
            return self._dest
        self._check_open()
        part, dest = self._part, self._dest
        try:
            if not os.path.lexists(dest):
                os.rename(part.folder, dest)
            else:
                if not dest.is_dir():
                    raise NotADirectoryError(20, os.strerror(20), os.fspath(dest))
                new = {self._name(i) for i in range(self._frames)}
                for name in sorted(new):
                    os.replace(part.folder / name, dest / name)
                for entry in os.scandir(dest):
                    if _FRAME_NAME.fullmatch(entry.name) and entry.name not in new and not entry.is_dir():
                        os.unlink(entry.path)
                os.rmdir(part.folder)
        except BaseException as exc:
            raise self._fail(exc) from exc
        self._closed = True
        self._discard.detach()
        return dest

