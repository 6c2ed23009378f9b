"""Stage 4: audio -> features -> frames -> video, end to end (SPEC 1-4).

:class:`Pipeline` holds the ONNX Runtime sessions; :func:`generate` is the
one-call form. Frames are produced and written one after another, features
are computed in batches: memory does not grow with the audio's length.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ._stages import run_stages
from .audio import load_audio, mel_spectrogram, mel_windows, num_mel_windows
from .errors import FeatureError, ModelError
from .features import FPS, MODES, feature_windows, load_features, pad_embeddings
from .frames import INPUT_SHAPE, paste_back, prepare_input
from .models import ModelSession, default_batch_size, default_providers, load_session, session_plan
from .template import Template
from .video import DEFAULT_PRESET

__all__ = ["Pipeline", "GenerateResult", "generate", "audio_features", "VIDEO_SUFFIXES"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")
ENCODER_BATCH = 64  # the reference's batch for the audio encoder
AUDIO_TRACK_RATE = 48000


@dataclass
class GenerateResult:
    """What :meth:`Pipeline.generate` produced."""

    output: Path
    frames: int
    fps: float  # video frame rate
    seconds: float  # wall time of the whole call
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def frames_per_second(self) -> float:
        """Throughput: frames made per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def duration(self) -> float:
        """Length of the video in seconds."""
        return self.frames / self.fps

    def __str__(self) -> str:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        return (
            f"{self.output}: {self.frames} frames ({self.duration:.2f} s at {self.fps:g} fps) in "
            f"{self.seconds:.1f} s, {self.frames_per_second:.1f} frames/s [{stages}]"
        )


class _Timer:
    """Seconds spent in each stage, summed over threads (thread-safe)."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def __call__(self, stage: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                dt = time.perf_counter() - self.t0
                with timer._lock:
                    timer.totals[stage] += dt

        return _Span()


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", leave=False)


def _session(model, kind: str, providers, **options) -> ModelSession:
    sess = model if isinstance(model, ModelSession) else load_session(model, providers=providers, **options)
    if sess.kind != kind:
        name = {"unet": "a U-Net", "audio_encoder": "an audio encoder"}
        raise ModelError(f"{sess.path}: is {name[sess.kind]}, expected {name[kind]}")
    return sess


class Pipeline:
    """SyncTalk_2D inference with a U-Net and (for ave) an audio encoder.

    Parameters
    ----------
    unet : str, os.PathLike or ModelSession
        U-Net ONNX file (any exporter; see :func:`synctalk_fast.models.load_session`).
    audio_encoder : str, os.PathLike or ModelSession, optional, keyword-only
        AVE audio encoder, needed to compute features from audio; hubert and
        wenet models take precomputed features instead.
    mode : {"ave", "hubert", "wenet"}, optional, keyword-only
        Checked against the U-Net's audio input (default: taken from it).
    providers : sequence of str, optional, keyword-only
        ONNX Runtime providers (default: the best available, TensorRT > CUDA
        > CoreML > DirectML > CPU).
    batch_size : int, optional, keyword-only
        Frames per U-Net call (default by provider: 16 on CUDA / TensorRT,
        4 on CPU; see :func:`synctalk_fast.models.default_batch_size`).
    threads : int, optional, keyword-only
        ONNX Runtime intra-op threads per session (default: the cores shared
        out among the sessions).
    sessions : int, optional, keyword-only
        U-Net sessions run in parallel, batches going to them in turn
        (default: one per core up to 4 on CPU, one on GPU; see
        :func:`synctalk_fast.models.session_plan`).
    precision : {"fp32", "fp16"}, keyword-only
        fp16 runs the U-Net in half precision (for GPUs).
    overlap : bool, keyword-only
        Run the stages concurrently in threads (default). False runs them
        one after another in the caller's thread.
    cache_mb : float, optional, keyword-only
        Decoded template frame cache (see :class:`Template`).
    """

    def __init__(
        self,
        unet,
        audio_encoder=None,
        *,
        mode: str | None = None,
        providers: Sequence[str] | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
        sessions: int | None = None,
        precision: str = "fp32",
        overlap: bool = True,
        cache_mb: float | None = None,
    ):
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError("batch_size must be >= 1")
        if sessions is not None and int(sessions) < 1:
            raise ValueError("sessions must be >= 1")
        if isinstance(unet, ModelSession):
            plan = session_plan(unet.providers, sessions=sessions or 1, threads=threads)
        else:
            plan = session_plan(providers if providers is not None else default_providers(), sessions=sessions,
                                threads=threads)
        self.unet = _session(unet, "unet", providers, threads=plan[1], precision=precision, batch_size=batch_size)
        # More sessions of the same model (one per core on CPU); frames go to them in turn.
        self.unets = [self.unet] + [
            load_session(self.unet.model_path, providers=self.unet.providers, threads=plan[1],
                         precision="fp32", batch_size=batch_size)
            for _ in range(plan[0] - 1)
        ]
        if mode is not None and mode not in MODES:
            raise FeatureError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode is not None and mode != self.unet.mode:
            raise ModelError(f"{self.unet.path}: takes {self.unet.mode} audio features, not {mode}")
        self.mode: str = self.unet.mode  # type: ignore[assignment]
        self.encoder = (_session(audio_encoder, "audio_encoder", providers, threads=threads)
                        if audio_encoder is not None else None)
        self.batch_size = int(batch_size or default_batch_size(self.unet.providers))
        self.overlap = bool(overlap)
        self.cache_mb = cache_mb
        self._template: Template | None = None  # the last one used, with its decoded frames

    def __repr__(self) -> str:
        enc = f", audio_encoder={str(self.encoder.path)!r}" if self.encoder else ""
        return (f"Pipeline(unet={str(self.unet.path)!r}{enc}, mode={self.mode!r}, batch_size={self.batch_size}, "
                f"providers={self.unet.providers})")

    def template(self, template) -> Template:
        """``template`` as a :class:`Template`; a folder used in the previous
        call is not loaded again, so its decoded frames are reused."""
        if isinstance(template, Template):
            return template
        folder = Path(template)
        if self._template is None or self._template.folder.resolve() != folder.resolve():
            self._template = None  # free the old cache first
            self._template = Template(folder, cache_mb=self.cache_mb)
        return self._template

    # -- audio -> features ------------------------------------------------
    def audio_features(self, audio, *, progress: bool = False) -> np.ndarray:
        """Per-frame audio features of speech (SPEC 1): float32 ``[n + 2, 512]``.

        See :func:`audio_features`; needs an ave U-Net and the audio encoder.
        """
        if self.mode != "ave":
            raise FeatureError(f"{self.mode} models take precomputed features (features=...), not audio")
        if self.encoder is None:
            raise FeatureError("computing features from audio needs audio_encoder=...; or pass features=...")
        return audio_features(audio, audio_encoder=self.encoder, progress=progress)

    def _unet_audio(self, features) -> tuple[np.ndarray, bool]:
        return load_features(features, mode=self.mode)

    # -- features -> frames -----------------------------------------------
    def frames(self, features, template, *, start: int = 0, feather: int = 0, _timer: _Timer | None = None) -> Iterator[np.ndarray]:
        """Lip-synced frames, in order: BGR uint8 ``[H, W, 3]``, one per feature row.

        The stages overlap (see ``overlap``): a worker thread decodes
        template frames (cached, :class:`Template`) and prepares batches of
        U-Net inputs, a second runs the U-Net, and the caller's thread pastes
        each prediction into a copy of its frame as it iterates. Each yielded
        frame is a new array the caller owns.

        Parameters
        ----------
        features : np.ndarray, str or os.PathLike
            Per-frame features (:meth:`audio_features`, or a file for
            :func:`synctalk_fast.load_features`), or per-frame U-Net windows.
        template : Template, str or os.PathLike
        start : int, keyword-only
            Offset added to the template frame index (SPEC 2).
        feather : int, keyword-only
            Soft paste band in pixels (0: the reference's hard paste).
        """
        timer = _timer or _Timer()
        for batch in self._batches(features, template, start=start, timer=timer):
            yield from self._paste(batch, feather, timer)

    def _batches(self, features, template, *, start: int, timer: _Timer, then: Sequence = ()) -> Iterator:
        """U-Net predictions by batch, ``(frames, pred)`` with ``frames`` a list
        of (read-only template frame, box); each function of ``then`` is
        applied to them in a further stage. The prepare stage and ``then``
        run at background priority (see :mod:`synctalk_fast._stages`)."""
        rows, windowed = self._unet_audio(features)
        tpl = self.template(template)
        n = rows.shape[0]
        order = tpl.order(n, start=start)
        c, h, w = MODES[self.mode]
        size = self.batch_size
        spare: queue.SimpleQueue = queue.SimpleQueue()  # input buffers the U-Net is done with

        def prepare(b0: int):
            b1 = min(n, b0 + size)
            try:
                images = spare.get_nowait()
            except queue.Empty:
                images = np.empty((size, *INPUT_SHAPE), dtype=np.float32)
            frames = []
            for j, k in enumerate(order[b0:b1]):
                with timer("decode"):
                    frame = tpl.frame(int(k), copy=False)  # read-only, shared with the cache
                with timer("prepare"):
                    prepare_input(frame, tpl.box(int(k)), out=images[j])
                frames.append((frame, tpl.box(int(k))))
            with timer("prepare"):
                audio = (
                    rows[b0:b1].reshape(b1 - b0, c, h, w)
                    if windowed
                    else feature_windows(rows, mode=self.mode, start=b0, stop=b1)
                )
            return frames, images, audio

        def infer(batch, unet=self.unet):
            frames, images, audio = batch
            with timer("infer"):
                pred = unet.run(image=images[: len(frames)], audio=audio)
            spare.put(images)
            return frames, pred

        starts = range(0, n, size)
        # one infer function per session: run_stages gives batch i to session i % len
        infers = [functools.partial(infer, unet=u) for u in self.unets]
        if not self.overlap:
            for b0 in starts:
                batch = infer(prepare(b0))
                for fn in then:
                    batch = fn(batch)
                yield batch
            return
        background = [0] + [2 + i for i in range(len(then))]
        yield from run_stages(map(prepare, starts), [infers, *then], depth=2, name="synctalk", background=background)

    @staticmethod
    def _paste(batch, feather: int, timer: _Timer, out: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Each frame of ``batch`` with its prediction pasted: new arrays, or
        ``out`` itself every time when given (the consumer must be done with
        one frame before asking for the next)."""
        frames, pred = batch
        for (frame, box), p in zip(frames, pred):
            with timer("paste"):
                pasted = paste_back(frame, box, p, feather=feather, out=out)
            yield pasted

    def stream(self, template, *, start: int = 0, **options):
        """A :class:`~synctalk_fast.Stream` on this pipeline's sessions:
        speech pushed in chunks, frames out as soon as they are computable.
        ``options`` go to :class:`~synctalk_fast.Stream` (``idle``,
        ``max_ready``, ``feather``)."""
        from .stream import Stream

        return Stream(self, template=template, start=start, **options)

    # -- frames -> video --------------------------------------------------
    @staticmethod
    def _writer(output: Path, fps, crf, preset, samples, image_format):
        from .video import FrameFolderWriter, VideoWriter

        if output.suffix.lower() not in VIDEO_SUFFIXES:
            return FrameFolderWriter(output, ext=image_format)
        # The track is stored at 48 kHz (resampled as it is encoded): AAC's
        # 1024-sample blocks are then 21 ms, so the decoded sound ends within
        # one video frame of the input.
        return VideoWriter(output, fps=fps, crf=crf, preset=preset, audio=samples, audio_rate=16000,
                           sample_rate=AUDIO_TRACK_RATE)

    def generate(
        self,
        audio=None,
        *,
        template,
        output,
        features=None,
        start: int = 0,
        fps: float | None = None,
        crf: int = 20,
        preset: str = DEFAULT_PRESET,
        feather: int = 0,
        image_format: str = "png",
        progress: bool = True,
    ) -> GenerateResult:
        """Render a lip-synced video (or a folder of frames).

        Parameters
        ----------
        audio : str, os.PathLike or np.ndarray, optional
            Speech (a sound file, or float32 samples at 16 kHz). Its features
            drive the mouth unless ``features`` is given; it is always the
            video's sound track when given.
        template : Template, str or os.PathLike, keyword-only
        output : str, os.PathLike, or a list of them, keyword-only
            ``.mp4`` (``.mov``, ``.m4v``, ``.mkv``): H.264 + AAC, written to a
            temporary file and renamed when complete. Anything else: a folder
            of ``frame_00000.png`` (or ``image_format="jpg"``). Several
            outputs are written in the same pass.
        features : np.ndarray, str or os.PathLike, optional, keyword-only
            Precomputed features instead of computing them from ``audio``
            (how hubert and wenet models are driven).
        start : int, keyword-only
            Template frame offset.
        fps : float, optional, keyword-only
            Video frame rate (default: 25, or 20 for wenet).
        crf, preset : keyword-only
            libx264 quality (CRF 20, as the reference) and speed preset
            (default superfast, chosen by measurement: see the README).
        feather : int, keyword-only
            Soft paste band in pixels (0: hard paste, as the reference).
        image_format : {"png", "jpg"}, keyword-only
            For a frames folder.
        progress : bool, keyword-only
            Progress bar with ETA on a terminal.

        Returns
        -------
        GenerateResult
        """
        t0 = time.perf_counter()
        timer = _Timer()
        if audio is None and features is None:
            raise FeatureError("generate needs audio, features, or both")
        tpl = self.template(template)
        samples = None
        if audio is not None:
            with timer("audio"):
                samples = load_audio(audio)
        if features is None:
            with timer("features"):
                features = self.audio_features(samples, progress=progress)
        rows, _ = self._unet_audio(features)
        fps = float(fps or FPS[self.mode])
        outputs = [Path(o) for o in output] if isinstance(output, (list, tuple)) else [Path(output)]
        n = rows.shape[0]
        bar = _progress(n, "frames", progress)
        try:
            with contextlib.ExitStack() as stack:  # every writer is closed on success, aborted on error
                writers = [stack.enter_context(self._writer(o, fps, crf, preset, samples, image_format)) for o in outputs]

                scratch = np.empty((tpl.size[1], tpl.size[0], 3), np.uint8)  # writers copy what they keep

                def paste_and_write(batch) -> int:  # a stage of its own: libx264 starts its threads from it
                    count = 0
                    for frame in self._paste(batch, feather, timer, out=scratch):
                        with timer("encode"):
                            for w in writers:
                                w.write(frame)
                        count += 1
                    return count

                for count in self._batches(features, tpl, start=start, timer=timer, then=[paste_and_write]):
                    if bar is not None:
                        bar.update(count)
        finally:
            if bar is not None:
                bar.close()
        output = outputs[0]
        result = GenerateResult(output, n, fps, time.perf_counter() - t0, dict(timer.totals))
        log.info("%s", result)
        return result


def audio_features(audio, *, audio_encoder, progress: bool = False) -> np.ndarray:
    """Per-frame AVE audio features of speech (SPEC 1.1-1.8).

    Parameters
    ----------
    audio : str, os.PathLike or np.ndarray
        A sound file, or float32 samples at 16 kHz.
    audio_encoder : str, os.PathLike or ModelSession, keyword-only
    progress : bool, keyword-only
        Show a progress bar (on a terminal).

    Returns
    -------
    np.ndarray
        float32 ``[n + 2, 512]``: the encoder embeddings of the ``n`` mel
        windows, first and last repeated; one row per video frame. The
        encoder runs in batches of 64 windows, so memory stays flat for
        long audio.
    """
    encoder = _session(audio_encoder, "audio_encoder", None)
    wav = load_audio(audio)
    mel = mel_spectrogram(wav)
    mel_windows(mel, stop=1)  # raises AudioError for audio shorter than one window
    n = num_mel_windows(mel.shape[1])
    bar = _progress(n, "audio features", progress)
    chunks = []
    for i in range(0, n, ENCODER_BATCH):
        chunks.append(encoder.run(mel=mel_windows(mel, start=i, stop=i + ENCODER_BATCH)))
        if bar is not None:
            bar.update(chunks[-1].shape[0])
    if bar is not None:
        bar.close()
    return pad_embeddings(np.concatenate(chunks))


def generate(
    audio=None,
    *,
    template,
    output,
    unet,
    audio_encoder=None,
    features=None,
    mode: str | None = None,
    providers: Sequence[str] | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    sessions: int | None = None,
    precision: str = "fp32",
    overlap: bool = True,
    cache_mb: float | None = None,
    **options,
) -> GenerateResult:
    """One call: load the models, render, write. See :class:`Pipeline` and
    :meth:`Pipeline.generate` for the parameters."""
    pipe = Pipeline(unet, audio_encoder, mode=mode, providers=providers, batch_size=batch_size, threads=threads,
                    sessions=sessions, precision=precision, overlap=overlap, cache_mb=cache_mb)
    return pipe.generate(audio, template=template, output=output, features=features, **options)
