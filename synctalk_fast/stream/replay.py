"""A sound file played into a :class:`~synctalk_fast.Stream` as a live source would.

:func:`replay` pushes the file in small chunks (at wall-clock pace with
``realtime``, as a microphone or a TTS would), takes the frames as they
come, optionally writes them to a sink, and returns the stream's latency
statistics. ``synctalk-fast stream`` is this function on the command line.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import soundfile as sf

from .._filters import SAMPLE_RATE
from ..audio import load_audio
from ..sinks import Sink, open_sink
from .core import Stream

__all__ = ["replay", "read_native"]


def read_native(path: str | os.PathLike[str]) -> tuple[np.ndarray, int, int]:
    """A sound file as stored: ``(samples, sample_rate, channels)`` with
    samples int16 ``[n, channels]`` for 16-bit PCM, else float32 ``[n,
    channels]``; formats soundfile cannot read come decoded at 16 kHz mono."""
    try:
        info = sf.info(os.fspath(path))
        dtype = "int16" if info.subtype == "PCM_16" else "float32"
        data, sample_rate = sf.read(os.fspath(path), dtype=dtype, always_2d=True)
        return data, sample_rate, data.shape[1]
    except Exception:  # noqa: BLE001 - let load_audio decode it (or say why not)
        return load_audio(path)[:, None], SAMPLE_RATE, 1


def _feed(
    stream: Stream,
    data: np.ndarray,
    sample_rate: int,
    chunk: int,
    realtime: bool,
    speed: float,
    errors: list[BaseException],
) -> None:
    """Push ``data`` in chunks, at wall-clock pace (times ``speed``) when
    ``realtime``; then close the stream (drained)."""
    try:
        t0 = time.perf_counter()
        for i in range(0, len(data), chunk):
            if realtime:  # the chunk has been spoken
                time.sleep(max(0.0, t0 + (i + chunk) / sample_rate / speed - time.perf_counter()))
            stream.push_audio(data[i : i + chunk], sample_rate=sample_rate)
        stream.close()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
        errors.append(exc)
        stream.close(drain=False)


def replay(
    stream: Stream,
    audio: str | os.PathLike[str],
    *,
    chunk_ms: float = 20.0,
    realtime: bool = False,
    speed: float = 1.0,
    output: Any = None,
    crf: int = 20,
    preset: str | None = None,
    encoder: str | None = None,
) -> dict[str, Any]:
    """Play a sound file into ``stream`` and take every frame it makes.

    Parameters
    ----------
    stream : Stream
        A new stream; it is closed at the end.
    audio : str or os.PathLike
        Speech, any rate and channel count (pushed as stored).
    chunk_ms : float, keyword-only
        Chunk length in milliseconds.
    realtime : bool, keyword-only
        Push at wall-clock pace (times ``speed``), as a live source would.
    speed : float, keyword-only
        With ``realtime``, feed at this multiple of real time.
    output : str, os.PathLike, Sink or callable, optional, keyword-only
        Record the frames with their audio (see
        :func:`synctalk_fast.sinks.open_sink`); aborted on any error.
    crf, preset, encoder : keyword-only
        Video encoding of a video ``output`` (see :class:`~synctalk_fast.sinks.Mp4Sink`).

    Returns
    -------
    dict
        :meth:`Stream.stats` plus ``audio_seconds``, ``wall_seconds``,
        ``frames_per_second``, ``first_frame_seconds`` (first lip-synced
        frame after the first push), ``realtime``, ``speed``, ``chunk_ms``.
    """
    if not (chunk_ms > 0 and speed > 0):
        stream.close(drain=False)
        raise ValueError(f"chunk_ms and speed must be > 0, got {chunk_ms!r} and {speed!r}")
    data, sample_rate, _ = read_native(audio)
    options: dict[str, Any] = {
        key: value for key, value in (("preset", preset), ("encoder", encoder)) if value is not None
    }
    sink: Sink | None = None
    if output is not None:
        sink = open_sink(output, fps=stream.fps, crf=crf, frame_audio=True, **options)
    chunk = max(1, int(round(sample_rate * chunk_ms / 1000)))
    errors: list[BaseException] = []
    feeder = threading.Thread(
        target=_feed,
        args=(stream, data, sample_rate, chunk, realtime, speed, errors),
        name="synctalk-feeder",
        daemon=True,
    )
    t0 = time.perf_counter()
    first: float | None = None
    try:
        feeder.start()
        for f in stream.frames(follow=True):
            if first is None and not f.idle:
                first = time.perf_counter() - t0
            if sink is not None:
                sink.write(f.image, f.audio)
        feeder.join()
        if errors:
            raise errors[0]
        if sink is not None:
            sink.close()
    except BaseException:
        stream.close(drain=False)
        if sink is not None:
            sink.abort()
        raise
    wall = time.perf_counter() - t0
    stats = stream.stats()
    stats.update(
        audio_seconds=len(data) / sample_rate,
        wall_seconds=wall,
        frames_per_second=stats["frames"] / wall if wall else 0.0,
        first_frame_seconds=first,
        realtime=bool(realtime),
        speed=speed,
        chunk_ms=chunk_ms,
    )
    return stats
