"""The engine: one person's networks and the U-Net step, shared by every producer.

An :class:`Engine` owns the U-Net sessions and the audio encoder, their
runtime, providers, device, precision, batch plan and session layouts, and
offers:

- the raw networks: :meth:`Engine.infer` (U-Net) and :meth:`Engine.encode`
  (audio encoder), and :meth:`Engine.audio_features` (speech -> per-frame
  features, numerics §1);
- the U-Net step once (numerics §3): :meth:`Engine.prepare` (template frames
  -> network inputs), :meth:`Engine.run` (the U-Net on one of the sessions),
  :meth:`Engine.paste` (predictions -> frames), and :meth:`Engine.step`, all
  three in one call. :class:`~synctalk_fast.Pipeline` runs the three parts
  as overlapped stages;
- shared scheduling for producers that run at the same time (live streams,
  jobs): a producer is a :class:`WorkSource` attached with
  :meth:`Engine.attach`, or the ready-made :class:`Producer` (``submit``
  returns a future). One worker per session takes items from the attached
  sources in turn, so a batch may hold items of several producers, each
  producer gets a fair share, and each producer's items are taken in the
  order it offers them.

Thread-safety: every session runs one call at a time (a lock per session);
any thread may call any method. Lock order: a source's own lock, then the
engine's; the engine never holds its lock while calling a source.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from ._progress import progress_bar
from .audio import load_audio, mel_spectrogram, mel_windows, num_mel_windows
from .errors import FeatureError, ModelError
from .features import pad_embeddings
from .frames import Box, paste_back, prepare_input
from .models.choice import choose_runtime
from .models.session import ModelSession, ResolvedModel, resolve_model
from .runtime import DEFAULT_RUNTIME, Runtime, default_batch_size, default_threads, get_runtime, resolve_providers, session_plan
from .shapes import AUDIO_SHAPES, ENCODER_BATCH, IMAGE_SHAPE, MEL_SHAPE
from .template import Template

__all__ = ["Engine", "StepBatch", "StepItem", "WorkSource", "Producer", "LAYOUTS", "ENCODER_BATCH"]

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "throughput", "latency")
_KIND_NAMES = {"unet": "a U-Net", "audio_encoder": "an audio encoder"}


def _no_timer(stage: str):
    return _NULL_SPAN


class _NullSpan:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL_SPAN = _NullSpan()


@dataclass(eq=False)
class StepBatch:
    """U-Net inputs of a batch and, once run, its predictions.

    Attributes
    ----------
    frames : list of (np.ndarray, Box)
        Each item's template frame (read-only, shared with the template's
        cache) and crop box.
    images : np.ndarray
        float32 ``[capacity, 6, 320, 320]``; the first ``len(frames)`` rows
        are the inputs (a buffer the caller may reuse once the batch ran).
    audio : np.ndarray
        float32 ``[n, C, H, W]`` feature windows.
    pred : np.ndarray or None
        float32 ``[n, 3, 320, 320]`` after :meth:`Engine.run`.
    """

    frames: list[tuple[np.ndarray, Box]]
    images: np.ndarray
    audio: np.ndarray
    pred: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(eq=False)
class StepItem:
    """One frame for the shared scheduler.

    ``window`` None passes the template frame through untouched (no U-Net);
    ``done(frame, error)`` is called once, from an engine thread, with a new
    BGR uint8 ``[H, W, 3]`` array the callee owns, or with the exception
    that stopped the batch.
    """

    template: Template
    index: int
    window: np.ndarray | None
    done: Callable[[np.ndarray | None, BaseException | None], None]
    feather: int = 0


class WorkSource(Protocol):
    """A producer of U-Net work: anything with ``take``.

    ``take(limit)`` returns up to ``limit`` :class:`StepItem` ready now, in
    the producer's order, without blocking (an empty list when it has none).
    It is called from engine threads, without the engine's lock held. A
    source calls :meth:`Engine.wake` when it has new work.
    """

    def take(self, limit: int) -> list[StepItem]: ...


@dataclass(eq=False)
class _Pool:
    """Sessions of one layout, their workers and the sources they serve."""

    name: str
    sessions: list[ModelSession]
    sources: list = field(default_factory=list)
    workers: dict[int, threading.Thread] = field(default_factory=dict)  # session number -> its worker
    pending: bool = False
    turn: int = 0


def _check_kind(sess: ModelSession, kind: str) -> ModelSession:
    if sess.kind != kind:
        raise ModelError(f"{sess.path}: is {_KIND_NAMES[sess.kind]}, expected {_KIND_NAMES[kind]}")
    return sess


class Engine:
    """The networks of one person (a U-Net) and the shared audio encoder.

    Parameters
    ----------
    unet : str, os.PathLike or ModelSession, optional
        U-Net ONNX file (any exporter; inputs bound by shape), or an open
        session (more sessions of its model are opened as the plan needs,
        with its providers and precision). None: an encoder-only engine
        (features from audio).
    audio_encoder : str, os.PathLike or ModelSession, optional
        The AVE audio encoder, needed to compute features from audio.
    runtime : {"onnxruntime", "openvino", "auto"}, keyword-only
        Inference runtime. ``"auto"``: the fastest here for this U-Net
        (measured once and cached; never slower than ONNX Runtime fp32, see
        :func:`synctalk_fast.models.choice.choose_runtime`).
    providers : sequence of str, optional, keyword-only
        Providers (devices) in order of preference, full names or aliases
        (``"cpu"``, ``"cuda"``, ...); default: the best installed.
    precision : {"fp32", "fp16", "bf16"}, keyword-only
        U-Net precision; every U-Net session of the engine runs it. fp32 is
        the exact path. fp16: GPUs (ONNX Runtime), ARM CPUs and Intel GPUs
        (OpenVINO). bf16: OpenVINO on CPUs with avx512_bf16 or AMX (a CPU
        without them is a ``ValueError``, never a slow emulation).
    batch_size : int, optional, keyword-only
        Frames per U-Net call (default by provider: 16 on CUDA / TensorRT, 4
        on CPU).
    sessions, threads : int, optional, keyword-only
        U-Net sessions side by side and host threads each (default: one per
        core up to 4 on CPU, one on an accelerator; see
        :func:`synctalk_fast.runtime.session_plan`).
    device_id : int, keyword-only
        Which GPU, for providers that have several (CUDA, TensorRT, ROCm, DirectML).

    Attributes
    ----------
    sessions : list of ModelSession
        The U-Net sessions (the throughput layout).
    encoder : ModelSession or None
    mode : str or None
        The U-Net's audio feature mode.
    runtime, providers, device, accelerator, precision, batch_size
        Properties of every U-Net session the engine owns.
    """

    def __init__(self, unet=None, audio_encoder=None, *, runtime: str | Runtime = DEFAULT_RUNTIME,
                 providers: Sequence[str] | None = None, precision: str = "fp32", batch_size: int | None = None,
                 sessions: int | None = None, threads: int | None = None, device_id: int = 0):
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError("batch_size must be >= 1")
        if sessions is not None and int(sessions) < 1:
            raise ValueError("sessions must be >= 1")
        if unet is None and audio_encoder is None:
            raise ValueError("an engine needs a U-Net, an audio encoder, or both")
        if runtime == "auto":
            if isinstance(unet, (str, os.PathLike)) and providers is None:
                runtime, precision = choose_runtime(unet, precision=precision)
            else:  # an open session, an encoder-only engine, or providers named: nothing to choose
                runtime = unet.model.runtime if isinstance(unet, ModelSession) else DEFAULT_RUNTIME
        self._rt = get_runtime(runtime)
        self.device_id = int(device_id)
        self.sessions: list[ModelSession] = []
        self.encoder: ModelSession | None = None
        self._model: ResolvedModel | None = None
        if isinstance(unet, ModelSession):
            first = _check_kind(unet, "unet")
            self._rt = get_runtime(first.model.runtime)
            self._providers = list(first.providers)
            plan = session_plan(self._providers, sessions=sessions or 1, threads=threads, runtime=self._rt)
            self._model = first.model
            self.device_id = first.device_id
            self._batch = int(batch_size or self._default_batch())
            self.sessions = [first] + [self._open_unet(plan[1]) for _ in range(plan[0] - 1)]
        else:
            self._providers = resolve_providers(providers, runtime=self._rt)
            self._batch = int(batch_size or self._default_batch())
            if unet is not None:
                plan = session_plan(self._providers, sessions=sessions, threads=threads, runtime=self._rt)
                self._model = resolve_model(unet, precision=precision, runtime=self._rt, providers=self._providers)
                if self._model.kind != "unet":
                    raise ModelError(f"{self._model.path}: is {_KIND_NAMES[self._model.kind]}, expected a U-Net")
                self.sessions = [self._open_unet(plan[1]) for _ in range(plan[0])]
        if audio_encoder is not None:
            if isinstance(audio_encoder, ModelSession):
                self.encoder = _check_kind(audio_encoder, "audio_encoder")
            else:
                model = resolve_model(audio_encoder, runtime=self._rt, providers=self._providers)
                if model.kind != "audio_encoder":
                    raise ModelError(f"{model.path}: is {_KIND_NAMES[model.kind]}, expected an audio encoder")
                self.encoder = ModelSession(model, self._providers, threads=threads, device_id=self.device_id)
        if self.sessions:
            self._providers = list(self.sessions[0].providers)
        self._locks = {id(s): threading.Lock() for s in self.sessions + ([self.encoder] if self.encoder else [])}
        self._cond = threading.Condition()
        self._pools: dict[str, _Pool] = {}
        self._layout_choice: dict[float, str] = {}
        self._closed = False

    def _default_batch(self) -> int:
        return default_batch_size(self._providers, runtime=self._rt)

    def _open_unet(self, threads: int) -> ModelSession:
        assert self._model is not None
        return ModelSession(self._model, self._providers, threads=threads, batch_size=self._batch,
                            device_id=self.device_id)

    # -- what the engine is -------------------------------------------------------
    @property
    def unet(self) -> ModelSession:
        """The first U-Net session (ModelError for an encoder-only engine)."""
        if not self.sessions:
            raise ModelError("this engine has no U-Net")
        return self.sessions[0]

    @property
    def mode(self) -> str | None:
        return self.sessions[0].mode if self.sessions else None

    @property
    def runtime(self) -> str:
        return self._rt.name

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    @property
    def provider(self):
        """The runtime's table row of the provider in use."""
        return self._rt.providers.get(self._providers[0]) if self._providers else None

    @property
    def device(self) -> str:
        """Where the U-Net's buffers live (``"cpu"``, ``"cuda"``)."""
        return (self.sessions or [self.encoder])[0].device

    @property
    def accelerator(self) -> bool:
        """The U-Net runs on a device other than the host CPU."""
        return (self.sessions or [self.encoder])[0].accelerator

    @property
    def precision(self) -> str:
        return self.sessions[0].precision if self.sessions else "fp32"

    @property
    def batch_size(self) -> int:
        return self._batch

    def __repr__(self) -> str:
        unet = f"unet={str(self.sessions[0].path)!r}, " if self.sessions else ""
        enc = f"audio_encoder={str(self.encoder.path)!r}, " if self.encoder else ""
        return (f"Engine({unet}{enc}runtime={self.runtime!r}, providers={self.providers}, precision={self.precision!r}, "
                f"batch_size={self.batch_size}, sessions={len(self.sessions)})")

    def describe(self) -> dict:
        """The engine as a dict (what ran, for result lines and JSON)."""
        return {"runtime": self.runtime, "provider": self._providers[0] if self._providers else None,
                "device": self.device, "device_id": self.device_id, "precision": self.precision, "batch_size": self.batch_size,
                "sessions": len(self.sessions), "threads_per_session": self.sessions[0].threads if self.sessions else None}

    # -- raw networks ---------------------------------------------------------------
    def infer(self, image: np.ndarray, audio: np.ndarray, *, session: int = 0,
              layout: str = "throughput") -> np.ndarray:
        """The U-Net on a batch: float32 ``image [N, 6, 320, 320]`` and ``audio
        [N, C, H, W]`` -> float32 ``[N, 3, 320, 320]`` in 0..1, on session
        number ``session`` of ``layout`` (see :meth:`layout_sessions`)."""
        if not self.sessions:
            raise ModelError("this engine has no U-Net")
        sess = (self.sessions if layout == "throughput" else self.layout_sessions(layout))[session]
        with self._locks[id(sess)]:
            return sess.run(image=image, audio=audio)

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """The audio encoder on float32 ``[N, 1, 80, 16]`` windows -> ``[N, 512]``."""
        if self.encoder is None:
            raise FeatureError("computing features from audio needs audio_encoder=...; or pass features=...")
        with self._locks[id(self.encoder)]:
            return self.encoder.run(mel=mel)

    def audio_features(self, audio, *, progress: bool = False) -> np.ndarray:
        """Per-frame AVE audio features of speech (numerics §1.1-1.8).

        Parameters
        ----------
        audio : str, os.PathLike or np.ndarray
            A sound file, or float32 samples at 16 kHz.
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
        if self.mode not in (None, "ave"):
            raise FeatureError(f"{self.mode} models take precomputed features (features=...), not audio")
        if self.encoder is None:
            raise FeatureError("computing features from audio needs audio_encoder=...; or pass features=...")
        wav = load_audio(audio)
        mel = mel_spectrogram(wav)
        mel_windows(mel, stop=1)  # raises AudioError for audio shorter than one window
        n = num_mel_windows(mel.shape[1])
        bar = progress_bar(n, "audio features", progress, unit="window")
        chunks = []
        try:
            for i in range(0, n, ENCODER_BATCH):
                chunks.append(self.encode(mel_windows(mel, start=i, stop=i + ENCODER_BATCH)))
                if bar is not None:
                    bar.update(chunks[-1].shape[0])
        finally:
            if bar is not None:
                bar.close()
        return pad_embeddings(np.concatenate(chunks))

    def warmup(self, layout: str = "throughput") -> list[int]:
        """Run each session of ``layout`` (and the encoder) once, so that the
        first real call does not pay for the runtime's first-run setup.

        Where the runtime plans per input shape (cuDNN's algorithm search,
        TensorRT's profiles, OpenVINO's static compiles), every batch size a
        live producer can send (1 .. ``batch_size``) is run once: a size
        first seen mid-conversation would stall it. Returns the batch sizes
        run.
        """
        if self.encoder is not None:
            self.encode(np.zeros((1, *MEL_SHAPE), np.float32))
        sessions = self.layout_sessions(layout)
        sizes = list(range(1, self._batch + 1)) if any(s.per_shape for s in sessions) else [1]
        for sess in sessions:
            with self._locks[id(sess)]:
                for n in sizes:
                    sess.run(image=np.zeros((n, *IMAGE_SHAPE), np.float32),
                             audio=np.zeros((n, *AUDIO_SHAPES[sess.mode]), np.float32))
        return sizes

    # -- the U-Net step -----------------------------------------------------------
    def prepare(self, items: Sequence[tuple[Template, int]], windows: np.ndarray, *, out: np.ndarray | None = None,
                timer: Callable = _no_timer) -> StepBatch:
        """Network inputs of a batch (numerics §3.1-3.4).

        Parameters
        ----------
        items : sequence of (Template, int)
            Each item's template and template frame index.
        windows : np.ndarray
            float32 ``[n, C, H, W]`` feature windows, one per item.
        out : np.ndarray, optional, keyword-only
            float32 ``[>= n, 6, 320, 320]`` buffer for the image inputs.
        timer : callable, optional, keyword-only
            A :class:`~synctalk_fast._progress.StageTimer` ("decode", "prepare").
        """
        n = len(items)
        images = out if out is not None and len(out) >= n else np.empty((n, *IMAGE_SHAPE), np.float32)
        frames = []
        for j, (tpl, k) in enumerate(items):
            with timer("decode"):
                frame = tpl.frame(int(k), copy=False)  # read-only, shared with the cache
            box = tpl.box(int(k))
            with timer("prepare"):
                prepare_input(frame, box, out=images[j])
            frames.append((frame, box))
        return StepBatch(frames, images, np.ascontiguousarray(windows, dtype=np.float32))

    def run(self, batch: StepBatch, *, session: int = 0, timer: Callable = _no_timer) -> StepBatch:
        """The U-Net on a prepared batch, on session number ``session``; sets
        ``batch.pred`` and returns the batch."""
        with timer("infer"):
            batch.pred = self.infer(batch.images[: len(batch)], batch.audio, session=session)
        return batch

    @staticmethod
    def paste(batch: StepBatch, *, feather: int = 0, out: np.ndarray | None = None,
              timer: Callable = _no_timer) -> Iterator[np.ndarray]:
        """Each frame of a run batch with its prediction pasted (numerics
        §3.6-3.7): new arrays, or ``out`` itself every time when given (the
        consumer must be done with one frame before asking for the next)."""
        assert batch.pred is not None, "paste needs a batch that ran"
        for (frame, box), p in zip(batch.frames, batch.pred):
            with timer("paste"):
                pasted = paste_back(frame, box, p, feather=feather, out=out)
            yield pasted

    def step(self, items: Sequence[tuple[Template, int]], windows: np.ndarray, *, feather: int = 0,
             session: int = 0) -> list[np.ndarray]:
        """:meth:`prepare`, :meth:`run` and :meth:`paste` in one call: the
        lip-synced frames of ``items``, new BGR uint8 ``[H, W, 3]`` arrays."""
        return list(self.paste(self.run(self.prepare(items, windows), session=session), feather=feather))

    # -- session layouts ------------------------------------------------------------
    def layout_sessions(self, layout: str) -> list[ModelSession]:
        """The U-Net sessions of a layout: "throughput" is :attr:`sessions`
        (one per core on CPU); "latency" is one session on every core (each
        frame done soonest), made on first use; they are the same sessions
        on an accelerator or when the plan has one session."""
        if layout not in ("throughput", "latency"):
            raise ValueError(f"layout must be 'throughput' or 'latency', got {layout!r}")
        with self._cond:
            return list(self._pool(layout).sessions)

    def _pool(self, layout: str) -> _Pool:
        """(Under the lock.) The pool of a layout, created on first use; the
        latency layout is the throughput pool itself where they would hold
        the same sessions."""
        if layout == "latency" and (len(self.sessions) <= 1 or self.accelerator):
            layout = "throughput"
        pool = self._pools.get(layout)
        if pool is None:
            if layout == "latency":
                single = self._open_unet(default_threads())
                self._locks[id(single)] = threading.Lock()
                pool = _Pool(layout, [single])
            else:
                pool = _Pool(layout, list(self.sessions))
            self._pools[layout] = pool
        return pool

    def choose_layout(self, layout: str = "auto", *, fps: float = 25.0) -> str:
        """``"throughput"`` or ``"latency"`` for a live producer at ``fps``.

        "auto" measures once (per frame rate): "latency" if one session on
        every core runs a frame in under 1 / (1.25 fps), else "throughput"
        (most frames per second when behind). On an accelerator, or with one
        session, both are the same sessions and the answer is "latency".
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'auto', 'throughput' or 'latency', got {layout!r}")
        if self.accelerator or len(self.sessions) == 1:
            return "latency" if len(self.sessions) == 1 else "throughput"
        if layout != "auto":
            return layout
        if fps not in self._layout_choice:
            single = self.layout_sessions("latency")[0]
            image = np.zeros((1, *IMAGE_SHAPE), np.float32)
            audio = np.zeros((1, *AUDIO_SHAPES[single.mode]), np.float32)
            times = []
            with self._locks[id(single)]:
                single.run(image=image, audio=audio)
                for _ in range(3):
                    t0 = time.perf_counter()
                    single.run(image=image, audio=audio)
                    times.append(time.perf_counter() - t0)
            per_frame = sorted(times)[1]
            choice = "latency" if 1.0 / per_frame >= 1.25 * fps else "throughput"
            if choice == "throughput":
                log.info("one session on every core takes %.0f ms a frame; using %d sessions", 1000 * per_frame,
                         len(self.sessions))
            self._layout_choice[fps] = choice
        return self._layout_choice[fps]

    # -- shared scheduling ----------------------------------------------------------
    def attach(self, source: WorkSource, *, layout: str = "throughput") -> None:
        """Serve ``source`` from the sessions of ``layout`` (workers start on
        first use and end when no source is attached)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            pool = self._pool(layout)
            pool.sources.append(source)
            pool.pending = True
            for k, sess in enumerate(pool.sessions):
                if k not in pool.workers:
                    t = threading.Thread(target=self._serve, args=(pool, k), name=f"synctalk-engine-{pool.name}-{k}",
                                         daemon=True)
                    pool.workers[k] = t
                    t.start()
            self._cond.notify_all()

    def detach(self, source: WorkSource) -> None:
        """Stop serving ``source`` (items it already gave are finished)."""
        with self._cond:
            for pool in self._pools.values():
                if source in pool.sources:
                    pool.sources.remove(source)
            self._cond.notify_all()

    def wake(self) -> None:
        """A source has new work (or room for more results)."""
        with self._cond:
            for pool in self._pools.values():
                pool.pending = True
            self._cond.notify_all()

    def producer(self, *, layout: str = "throughput") -> Producer:
        """A new :class:`Producer` attached to this engine."""
        return Producer(self, layout=layout)

    def close(self) -> None:
        """Detach every source and end the workers (sessions stay usable for direct calls)."""
        with self._cond:
            self._closed = True
            for pool in self._pools.values():
                pool.sources.clear()
            self._cond.notify_all()

    def _gather(self, pool: _Pool, limit: int) -> list[StepItem]:
        """Up to ``limit`` items, a fair share from each source in turn."""
        with self._cond:
            sources = list(pool.sources)
            pool.turn += 1
            start = pool.turn
        if not sources:
            return []
        k = start % len(sources)
        active = sources[k:] + sources[:k]
        items: list[StepItem] = []
        while active and len(items) < limit:
            share = max(1, (limit - len(items)) // len(active))
            more = []
            for src in active:
                room = min(share, limit - len(items))
                if room <= 0:
                    break
                got = src.take(room)
                items += got
                if len(got) == room:
                    more.append(src)
            active = more
        return items

    def _serve(self, pool: _Pool, k: int) -> None:
        """Worker of session ``k`` of ``pool``; it unregisters itself when no
        source is left, so that :meth:`attach` starts a new one."""
        sess = pool.sessions[k]
        images = np.empty((self._batch, *IMAGE_SHAPE), np.float32)
        while True:
            with self._cond:
                while not pool.pending and pool.sources and not self._closed:
                    self._cond.wait()
                if not pool.sources or self._closed:
                    del pool.workers[k]
                    return
                pool.pending = False
            items = self._gather(pool, self._batch)
            if not items:
                continue
            if len(items) == self._batch:  # there may be more: let another worker look
                self.wake()
            self._run_items(items, sess, images)

    def _run_items(self, items: list[StepItem], sess: ModelSession, images: np.ndarray) -> None:
        results: list[np.ndarray | None] = [None] * len(items)
        error: BaseException | None = None
        try:
            run = [j for j, it in enumerate(items) if it.window is not None]
            for j, it in enumerate(items):
                if it.window is None:
                    results[j] = it.template.frame(it.index)
            if run:
                batch = self.prepare([(items[j].template, items[j].index) for j in run],
                                     np.stack([items[j].window for j in run]), out=images)
                with self._locks[id(sess)]:
                    batch.pred = sess.run(image=batch.images[: len(batch)], audio=batch.audio)
                for j, (frame, box), p in zip(run, batch.frames, batch.pred):
                    results[j] = paste_back(frame, box, p, feather=items[j].feather)
        except BaseException as exc:  # noqa: BLE001 - handed to every producer of the batch
            error = exc
        for it, frame in zip(items, results):
            it.done(None if error is not None else frame, error)


class Producer:
    """A producer with a queue: :meth:`submit` frames, get futures.

    Frames are taken in submit order; each future's result is the new BGR
    uint8 ``[H, W, 3]`` frame (or the exception of its batch). Several
    producers on one engine are batched together, each with a fair share.
    Use as a context manager, or :meth:`close` it.
    """

    def __init__(self, engine: Engine, *, layout: str = "throughput"):
        self.engine = engine
        self._lock = threading.Lock()
        self._queue: list[StepItem] = []
        self._head = 0
        engine.attach(self, layout=layout)

    def submit(self, template: Template, index: int, window: np.ndarray | None, *, feather: int = 0) -> Future:
        """Queue template frame ``index`` with feature window ``window``
        (float32 ``[C, H, W]``; None: the template frame untouched)."""
        fut: Future = Future()

        def done(frame, error, fut=fut):
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(frame)

        item = StepItem(template, int(index), None if window is None else np.asarray(window, np.float32), done,
                        int(feather))
        with self._lock:
            self._queue.append(item)
        self.engine.wake()
        return fut

    def take(self, limit: int) -> list[StepItem]:
        with self._lock:
            got = self._queue[self._head : self._head + limit]
            self._head += len(got)
            if self._head > 1024 and self._head * 2 > len(self._queue):
                del self._queue[: self._head]
                self._head = 0
            return got

    def close(self) -> None:
        self.engine.detach(self)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
