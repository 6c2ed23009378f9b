"""Audio -> features -> frames -> video, end to end (numerics §1-4).

:class:`Pipeline` runs an :class:`~synctalk_fast.engine.Engine` over a whole
utterance; :func:`generate` is the one-call form. Frames are produced and
written one after another, features are computed in batches: memory does
not grow with the audio's length.

How the engine runs is one :class:`~synctalk_fast.engine.EngineOptions`
(``options=``, or its fields as keywords); nothing here restates them.
Threads: :meth:`Pipeline.frames` and :meth:`Pipeline.generate` run their
stages in worker threads of their own (see ``synctalk_fast._util.stages``)
and join them before returning; a Pipeline serves one call at a time.
"""

from __future__ import annotations

import functools
import inspect
import logging
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ._filters import SAMPLE_RATE
from ._util.progress import StageTimer, progress_bar
from ._util.stages import run_stages
from .audio import AudioLike, load_audio
from .engine import Engine, EngineOptions, StepBatch
from .engine.options import OPTION_NAMES
from .errors import FeatureError, ModelError
from .features import FeaturesLike, feature_windows, load_features
from .models.session import ModelLike, ModelSession
from .shapes import FPS, IMAGE_SHAPE, MODES
from .sinks import DEFAULT_ENCODER, DEFAULT_PRESET, VIDEO_SUFFIXES, OutputLike, Sink, open_sink
from .stream import Stream
from .template import Template, TemplateLike

__all__ = ["Pipeline", "GenerateResult", "generate", "audio_features", "VIDEO_SUFFIXES"]

log = logging.getLogger(__name__)


@dataclass
class GenerateResult:
    """What :meth:`Pipeline.generate` produced."""

    output: Any  # the first output: its Path, or the Sink given
    frames: int
    fps: float  # video frame rate
    seconds: float  # wall time of the whole call
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    engine: dict[str, Any] = field(
        default_factory=dict
    )  # what ran: runtime, provider, device, precision, batch, sessions

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
        ran = ""
        if self.engine.get("provider"):
            device = self.engine["device"] + (f":{self.engine['device_id']}" if self.engine["device"] != "cpu" else "")
            ran = f" on {self.engine['provider']} ({device}, {self.engine['precision']})"
        return (
            f"{self.output}: {self.frames} frames ({self.duration:.2f} s at {self.fps:g} fps) in "
            f"{self.seconds:.1f} s, {self.frames_per_second:.1f} frames/s{ran} [{stages}]"
        )


class Pipeline:
    """SyncTalk_2D inference with a U-Net and (for ave) an audio encoder.

    Parameters
    ----------
    unet : str, os.PathLike, ModelSession or Engine
        U-Net ONNX file (any exporter; see :func:`synctalk_fast.models.load_session`),
        an open session (one U-Net session unless ``sessions`` says more), or
        an :class:`~synctalk_fast.engine.Engine` to share (then it runs with
        its own options: giving an audio encoder, ``options`` or engine
        options too is a ``ValueError``).
    audio_encoder : str, os.PathLike or ModelSession, optional
        AVE audio encoder, needed to compute features from audio; hubert and
        wenet models take precomputed features instead.
    mode : {"ave", "hubert", "wenet"}, optional, keyword-only
        Checked against the U-Net's audio input (default: taken from it).
    overlap : bool, keyword-only
        Run the stages concurrently in threads (default). False runs them
        one after another in the caller's thread.
    options : EngineOptions, optional, keyword-only
        How the engine runs: runtime, providers, device, precision, batch
        size, sessions, threads, and ``cache_mb`` (the decoded template frame
        cache, see :class:`~synctalk_fast.Template`); each field's values
        and default are documented on
        :class:`~synctalk_fast.engine.EngineOptions`.
    **engine_options
        Any field of :class:`~synctalk_fast.engine.EngineOptions` by name
        (``runtime=``, ``providers=``, ``precision=``, ``batch_size=``, ...),
        over ``options``. An unknown name is a ``TypeError``.

    Attributes
    ----------
    engine : Engine
        The networks and the U-Net step (shareable with streams and jobs).
    options : EngineOptions
        What the engine runs with (``engine.options``).
    """

    def __init__(
        self,
        unet: ModelLike | Engine,
        audio_encoder: ModelLike | None = None,
        *,
        mode: str | None = None,
        overlap: bool = True,
        options: EngineOptions | None = None,
        **engine_options: Any,
    ):
        opts = EngineOptions.merge(options, engine_options, where="Pipeline")  # checks the names
        if isinstance(unet, Engine):
            if audio_encoder is not None:
                raise ValueError("give the audio encoder to the Engine, not to a Pipeline on it")
            given = sorted(k for k, v in engine_options.items() if v is not None)
            if options is not None or given:
                raise ValueError(
                    f"a Pipeline on an Engine runs with the engine's options; give "
                    f"{', '.join(given) or 'options'} to the Engine instead"
                )
            self.engine = unet
        else:
            self.engine = Engine(unet, audio_encoder, options=opts)
        if not self.engine.sessions:
            raise ModelError("a Pipeline needs a U-Net")
        if mode is not None and mode not in MODES:
            raise FeatureError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode is not None and mode != self.engine.mode:
            raise ModelError(f"{self.engine.unet.path}: takes {self.engine.mode} audio features, not {mode}")
        self.mode: str = self.engine.mode  # type: ignore[assignment]
        self.overlap = bool(overlap)
        self._template: Template | None = None  # the last one used, with its decoded frames

    @property
    def options(self) -> EngineOptions:
        """What the engine runs with (:attr:`Engine.options`)."""
        return self.engine.options

    @property
    def cache_mb(self) -> float | None:
        """Decoded template frame cache in MiB (``options.cache_mb``; None: the default)."""
        return self.engine.options.cache_mb

    # The engine's sessions, read-only (kept for code written against them).
    @property
    def unet(self) -> ModelSession:
        return self.engine.unet

    @property
    def unets(self) -> list[ModelSession]:
        return list(self.engine.sessions)

    @property
    def encoder(self) -> ModelSession | None:
        return self.engine.encoder

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    def __repr__(self) -> str:
        enc = f", audio_encoder={str(self.encoder.path)!r}" if self.encoder else ""
        return (
            f"Pipeline(unet={str(self.unet.path)!r}{enc}, mode={self.mode!r}, batch_size={self.batch_size}, "
            f"runtime={self.engine.runtime!r}, providers={self.engine.providers})"
        )

    def template(self, template: TemplateLike) -> Template:
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
    def audio_features(self, audio: AudioLike, *, progress: bool = False) -> np.ndarray:
        """Per-frame audio features of speech (numerics §1): float32 ``[n + 2, 512]``.

        See :meth:`Engine.audio_features`; needs an ave U-Net and the audio encoder.
        """
        return self.engine.audio_features(audio, progress=progress)

    def _unet_audio(self, features: FeaturesLike) -> tuple[np.ndarray, bool]:
        return load_features(features, mode=self.mode)

    # -- features -> frames -----------------------------------------------
    def frames(
        self,
        features: FeaturesLike,
        template: TemplateLike,
        *,
        start: int = 0,
        feather: int = 0,
        _timer: StageTimer | None = None,
    ) -> Iterator[np.ndarray]:
        """Lip-synced frames, in order: BGR uint8 ``[H, W, 3]``, one per feature row.

        The stages overlap (see ``overlap``): a worker thread decodes
        template frames (cached, :class:`Template`) and prepares batches of
        U-Net inputs, one thread per engine session runs the U-Net, and the
        caller's thread pastes each prediction into a copy of its frame as
        it iterates. Each yielded frame is a new array the caller owns.

        Parameters
        ----------
        features : np.ndarray, str or os.PathLike
            Per-frame features (:meth:`audio_features`, or a file for
            :func:`synctalk_fast.load_features`), or per-frame U-Net windows.
        template : Template, str or os.PathLike
        start : int, keyword-only
            Offset added to the template frame index (numerics §2).
        feather : int, keyword-only
            Soft paste band in pixels (0: the reference's hard paste).
        """
        timer = _timer or StageTimer()
        for batch in self._batches(features, template, start=start, timer=timer):
            yield from self.engine.paste(batch, feather=feather, timer=timer)

    def _batches(
        self,
        features: FeaturesLike,
        template: TemplateLike,
        *,
        start: int,
        timer: StageTimer,
        then: Sequence[Callable[[Any], Any]] = (),
    ) -> Iterator[Any]:
        """Run batches (:class:`~synctalk_fast.engine.StepBatch`) in order;
        each function of ``then`` is applied to them in a further stage. The
        prepare stage and ``then`` run at background priority on CPU (see
        ``synctalk_fast._util.stages``)."""
        engine = self.engine
        rows, windowed = self._unet_audio(features)
        tpl = self.template(template)
        n = rows.shape[0]
        order = tpl.order(n, start=start)
        shape = MODES[self.mode]
        size = engine.batch_size
        spare: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()  # input buffers the U-Net is done with

        def prepare(b0: int) -> StepBatch:
            b1 = min(n, b0 + size)
            try:
                images = spare.get_nowait()
            except queue.Empty:
                images = np.empty((size, *IMAGE_SHAPE), dtype=np.float32)
            with timer("prepare"):
                windows = (
                    rows[b0:b1].reshape(b1 - b0, *shape)
                    if windowed
                    else feature_windows(rows, mode=self.mode, start=b0, stop=b1)
                )
            return engine.prepare([(tpl, int(k)) for k in order[b0:b1]], windows, out=images, timer=timer)

        def infer(batch: StepBatch, session: int = 0) -> StepBatch:
            engine.run(batch, session=session, timer=timer)
            spare.put(batch.images)
            return batch

        starts = range(0, n, size)
        if not self.overlap:
            for b0 in starts:
                batch: Any = infer(prepare(b0))
                for fn in then:
                    batch = fn(batch)
                yield batch
            return
        # one infer function per session: run_stages gives batch i to session i % len
        infers = [functools.partial(infer, session=k) for k in range(len(engine.sessions))]
        # On CPU the U-Net owns the cores, so the other stages only take what it
        # leaves (SCHED_IDLE); on an accelerator they are what limits the
        # pace, and at idle priority anything else on the host would starve them.
        background = [] if engine.accelerator else [0] + [2 + i for i in range(len(then))]
        yield from run_stages(map(prepare, starts), [infers, *then], depth=2, name="synctalk", background=background)

    def stream(self, template: TemplateLike, *, start: int = 0, **stream_options: Any) -> Stream:
        """A :class:`~synctalk_fast.Stream` on this pipeline's engine: speech
        pushed in chunks, frames out as soon as they are computable.
        ``stream_options`` go to :class:`~synctalk_fast.Stream` (``idle``,
        ``max_ready``, ``feather``, ``max_lag``, ``layout``)."""
        return Stream(self.engine, template=self.template(template), start=start, **stream_options)

    # -- frames -> video --------------------------------------------------
    def generate(
        self,
        audio: AudioLike | None = None,
        *,
        template: TemplateLike,
        output: OutputLike | Sequence[OutputLike],
        features: FeaturesLike | None = None,
        start: int = 0,
        fps: float | None = None,
        crf: int = 20,
        preset: str = DEFAULT_PRESET,
        encoder: str = DEFAULT_ENCODER,
        feather: int = 0,
        image_format: str = "png",
        progress: bool = True,
    ) -> GenerateResult:
        """Render a lip-synced video (or a folder of frames, or into any sink).

        Parameters
        ----------
        audio : str, os.PathLike or np.ndarray, optional
            Speech (a sound file, or float32 samples at 16 kHz). Its features
            drive the mouth unless ``features`` is given; it is always the
            video's sound track when given.
        template : Template, str or os.PathLike, keyword-only
        output : str, os.PathLike, Sink, callable, or a list of them, keyword-only
            ``.mp4`` (``.mov``, ``.m4v``, ``.mkv``): H.264 + AAC, written to a
            temporary file and renamed when complete. A path without a
            suffix (or an existing folder): ``frame_00000.png`` ... (or
            ``image_format="jpg"``). A :class:`~synctalk_fast.sinks.Sink`
            (any object with ``write(frame, audio=None)``, ``close()``,
            ``abort()``) or a callable ``fn(frame, audio)``: frames as they
            are made, each with its 640 samples of 16 kHz audio (when there
            is audio). Any other suffix is an :class:`OutputError`. Several
            outputs are written in the same pass (see
            :func:`synctalk_fast.sinks.open_sink`).
        features : np.ndarray, str or os.PathLike, optional, keyword-only
            Precomputed features instead of computing them from ``audio``
            (how hubert and wenet models are driven).
        start : int, keyword-only
            Template frame offset.
        fps : float, optional, keyword-only
            Video frame rate (default: 25, or 20 for wenet).
        crf, preset, encoder : keyword-only
            H.264 encoding of a video output (see :class:`~synctalk_fast.sinks.Mp4Sink`):
            CRF 20 as the reference, preset superfast (chosen by measurement:
            see the README), libx264; an encoder that cannot run here is an
            :class:`OutputError` before any work.
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
        timer = StageTimer()
        if audio is None and features is None:
            raise FeatureError("generate needs audio, features, or both")
        tpl = self.template(template)
        samples, features = self._speech(audio, features, timer=timer, progress=progress)
        n = self._unet_audio(features)[0].shape[0]
        fps = float(fps or FPS[self.mode])
        targets: list[OutputLike] = list(output) if isinstance(output, (list, tuple)) else [cast(OutputLike, output)]
        encoding = {"fps": fps, "crf": crf, "preset": preset, "encoder": encoder, "image_format": image_format}
        bar = progress_bar(n, "frames", progress)
        try:
            self._write(targets, encoding, features, tpl, samples, start=start, feather=feather, timer=timer, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        first = targets[0]
        result = GenerateResult(
            Path(first) if isinstance(first, (str, Path)) else first,
            n,
            fps,
            time.perf_counter() - t0,
            dict(timer.totals),
            self.engine.describe(),
        )
        log.info("%s", result)
        return result

    def _speech(
        self, audio: AudioLike | None, features: FeaturesLike | None, *, timer: StageTimer, progress: bool
    ) -> tuple[np.ndarray | None, FeaturesLike]:
        """The samples of ``audio`` (None without audio) and the features (computed from them if not given)."""
        samples = None
        if audio is not None:
            with timer("audio"):
                samples = load_audio(audio)
        if features is None:
            assert samples is not None
            with timer("features"):
                features = self.audio_features(samples, progress=progress)
        return samples, features

    def _write(
        self,
        targets: Sequence[OutputLike],
        encoding: dict[str, Any],
        features: FeaturesLike,
        tpl: Template,
        samples: np.ndarray | None,
        *,
        start: int,
        feather: int,
        timer: StageTimer,
        bar: Any,
    ) -> None:
        """Open a sink per target, render into all of them in one pass and close them; abort them all on any error.

        Each frame goes to every sink with its samples (``samples``' share of
        the frame, or None without audio); ``encoding`` holds the
        :func:`~synctalk_fast.sinks.open_sink` arguments.
        """
        sinks: list[Sink] = []
        scratch = np.empty((tpl.size[1], tpl.size[0], 3), np.uint8)  # sinks copy what they keep
        per_frame = int(round(SAMPLE_RATE / encoding["fps"]))
        written = 0

        def paste_and_write(batch: StepBatch) -> int:  # a stage of its own: libx264 starts its threads from it
            nonlocal written
            count = 0
            for frame in self.engine.paste(batch, feather=feather, out=scratch, timer=timer):
                sound = None if samples is None else samples[written * per_frame : (written + 1) * per_frame]
                with timer("encode"):
                    for sink in sinks:
                        sink.write(frame, sound)
                written += 1
                count += 1
            return count

        try:
            for target in targets:
                sinks.append(open_sink(target, audio=samples, **encoding))
            for count in self._batches(features, tpl, start=start, timer=timer, then=[paste_and_write]):
                if bar is not None:
                    bar.update(count)
            for sink in sinks:
                sink.close()
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise


# Keywords of Pipeline.generate that generate() passes on (the others it names itself).
_GENERATE_KEYWORDS = frozenset(
    p.name for p in inspect.signature(Pipeline.generate).parameters.values() if p.kind is p.KEYWORD_ONLY
) - {"template", "output", "features"}


def audio_features(audio: AudioLike, *, audio_encoder: ModelLike | Engine, progress: bool = False) -> np.ndarray:
    """Per-frame AVE audio features of speech (numerics §1.1-1.8).

    Parameters
    ----------
    audio : str, os.PathLike or np.ndarray
        A sound file, or float32 samples at 16 kHz.
    audio_encoder : str, os.PathLike, ModelSession or Engine, keyword-only
    progress : bool, keyword-only
        Show a progress bar (on a terminal).

    Returns
    -------
    np.ndarray
        float32 ``[n + 2, 512]`` (see :meth:`Engine.audio_features`).
    """
    engine = audio_encoder if isinstance(audio_encoder, Engine) else Engine(audio_encoder=audio_encoder)
    return engine.audio_features(audio, progress=progress)


def generate(
    audio: AudioLike | None = None,
    *,
    template: TemplateLike,
    output: OutputLike | Sequence[OutputLike],
    unet: ModelLike | Engine,
    audio_encoder: ModelLike | None = None,
    features: FeaturesLike | None = None,
    mode: str | None = None,
    overlap: bool = True,
    options: EngineOptions | None = None,
    **kwargs: Any,
) -> GenerateResult:
    """One call: load the models, render, write.

    ``unet``, ``audio_encoder``, ``mode``, ``overlap`` and ``options`` make
    the :class:`Pipeline`; of ``kwargs``, the fields of
    :class:`~synctalk_fast.engine.EngineOptions` (``batch_size=``,
    ``precision=``, ...) go to its engine, over ``options``, and the others
    (``start``, ``fps``, ``crf``, ``preset``, ``encoder``, ``feather``,
    ``image_format``, ``progress``) to :meth:`Pipeline.generate`, which
    documents them with ``audio``, ``template``, ``output`` and ``features``.

    Raises
    ------
    TypeError
        A keyword that is neither (before any model is loaded).
    """
    engine_options = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTION_NAMES}
    unknown = sorted(set(kwargs) - _GENERATE_KEYWORDS)
    if unknown:
        raise TypeError(
            f"generate() got unexpected keyword argument(s) {', '.join(unknown)}; expected engine "
            f"options ({', '.join(OPTION_NAMES)}) or {', '.join(sorted(_GENERATE_KEYWORDS))}"
        )
    pipe = Pipeline(unet, audio_encoder, mode=mode, overlap=overlap, options=options, **engine_options)
    return pipe.generate(audio, template=template, output=output, features=features, **kwargs)
