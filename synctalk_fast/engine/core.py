"""The engine: one person's networks and the U-Net step, shared by every producer.

An :class:`Engine` owns the U-Net sessions and the audio encoder, their
runtime, providers, device, precision, batch plan and session layouts (all
from one :class:`~synctalk_fast.engine.options.EngineOptions`), and offers:

- the raw networks: :meth:`Engine.infer` (U-Net) and :meth:`Engine.encode`
  (audio encoder), and :meth:`Engine.audio_features` (speech -> per-frame
  features, numerics §1);
- the U-Net step once (numerics §3): :meth:`Engine.prepare`,
  :meth:`Engine.run`, :meth:`Engine.paste` (see :mod:`.step`), and
  :meth:`Engine.step`, all three in one call;
- shared scheduling for producers that run at the same time (see
  :mod:`.scheduler`): :meth:`Engine.attach`, :meth:`Engine.producer`.

Thread-safety: every session runs one call at a time (a lock per session);
any thread may call any method.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._util.progress import progress_bar
from ..audio import load_audio, mel_spectrogram, mel_windows, num_mel_windows
from ..errors import FeatureError, ModelError
from ..features import pad_embeddings
from ..models.choice import choose_runtime
from ..models.session import ModelSession, ResolvedModel, resolve_model
from ..models.timing import unet_feeds
from ..runtime import DEFAULT_RUNTIME, default_batch_size, default_threads, get_runtime, resolve_providers, session_plan
from ..shapes import ENCODER_BATCH, MEL_SHAPE
from ..template import Template
from .layout import LAYOUTS, SESSION_LAYOUTS, check_layout, measure_layout
from .options import EngineOptions
from .scheduler import Producer, Scheduler, WorkSource
from .step import StepBatch, Timer, no_timer, paste_batch, prepare_batch

__all__ = ["Engine"]

log = logging.getLogger(__name__)

_KIND_NAMES = {"unet": "a U-Net", "audio_encoder": "an audio encoder"}


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
    options : EngineOptions, optional, keyword-only
        How the engine runs: runtime (``"auto"``: the fastest here for this
        U-Net, measured once and cached), providers, device, precision,
        batch size, sessions, threads (see
        :class:`~synctalk_fast.engine.options.EngineOptions`).
    **engine_options
        Any field of :class:`EngineOptions` by name (``runtime=``,
        ``precision=``, ``batch_size=``, ...), over ``options``.

    Attributes
    ----------
    options : EngineOptions
        The options asked for, with ``runtime="auto"`` resolved.
    sessions : list of ModelSession
        The U-Net sessions (the throughput layout).
    encoder : ModelSession or None
    mode : str or None
        The U-Net's audio feature mode.
    runtime, providers, device, accelerator, precision, batch_size
        Properties of every U-Net session the engine owns.
    """

    def __init__(
        self,
        unet: str | os.PathLike[str] | ModelSession | None = None,
        audio_encoder: str | os.PathLike[str] | ModelSession | None = None,
        *,
        options: EngineOptions | None = None,
        **engine_options: Any,
    ):
        opts = EngineOptions.merge(options, engine_options, where="Engine")
        if unet is None and audio_encoder is None:
            raise ValueError("an engine needs a U-Net, an audio encoder, or both")
        runtime: str = opts.runtime
        precision: str = opts.precision
        if runtime == "auto":
            if isinstance(unet, (str, os.PathLike)) and opts.providers is None:
                runtime, precision = choose_runtime(unet, precision=precision)
            else:  # an open session, an encoder-only engine, or providers named: nothing to choose
                runtime = unet.model.runtime.name if isinstance(unet, ModelSession) else DEFAULT_RUNTIME
        self.options = opts.replace(runtime=runtime, precision=precision)
        self._rt = get_runtime(runtime)
        self.device_id = opts.device_id
        self.sessions: list[ModelSession] = []
        self.encoder: ModelSession | None = None
        self._model: ResolvedModel | None = None
        if isinstance(unet, ModelSession):
            first = _check_kind(unet, "unet")
            self._rt = get_runtime(first.model.runtime)
            self._providers = list(first.providers)
            plan = session_plan(self._providers, sessions=opts.sessions or 1, threads=opts.threads, runtime=self._rt)
            self._model = first.model
            self.device_id = first.device_id
            self._batch = int(opts.batch_size or self._default_batch())
            self.sessions = [first] + [self._open_unet(plan[1]) for _ in range(plan[0] - 1)]
        else:
            self._providers = resolve_providers(opts.provider_list, runtime=self._rt)
            self._batch = int(opts.batch_size or self._default_batch())
            if unet is not None:
                plan = session_plan(self._providers, sessions=opts.sessions, threads=opts.threads, runtime=self._rt)
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
                self.encoder = ModelSession(model, self._providers, threads=opts.threads, device_id=self.device_id)
        if self.sessions:
            self._providers = list(self.sessions[0].providers)
        self._locks = {id(s): threading.Lock() for s in self.sessions + ([self.encoder] if self.encoder else [])}
        self._scheduler = Scheduler(self._batch, self._open_pool, self._locks)
        self._layout_choice: dict[float, str] = {}

    def _default_batch(self) -> int:
        return default_batch_size(self._providers, runtime=self._rt)

    def _open_unet(self, threads: int) -> ModelSession:
        assert self._model is not None
        return ModelSession(
            self._model, self._providers, threads=threads, batch_size=self._batch, device_id=self.device_id
        )

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
        return self._first_session.device

    @property
    def accelerator(self) -> bool:
        """The U-Net runs on a device other than the host CPU."""
        return self._first_session.accelerator

    @property
    def _first_session(self) -> ModelSession:
        """The first U-Net session, or the encoder of an encoder-only engine."""
        first = self.sessions[0] if self.sessions else self.encoder
        assert first is not None, "an engine has a U-Net or an encoder"
        return first

    @property
    def precision(self) -> str:
        return self.sessions[0].precision if self.sessions else "fp32"

    @property
    def batch_size(self) -> int:
        return self._batch

    def __repr__(self) -> str:
        unet = f"unet={str(self.sessions[0].path)!r}, " if self.sessions else ""
        enc = f"audio_encoder={str(self.encoder.path)!r}, " if self.encoder else ""
        return (
            f"Engine({unet}{enc}runtime={self.runtime!r}, providers={self.providers}, precision={self.precision!r}, "
            f"batch_size={self.batch_size}, sessions={len(self.sessions)})"
        )

    def describe(self) -> dict:
        """The engine as a dict (what ran, for result lines and JSON)."""
        return {
            "runtime": self.runtime,
            "provider": self._providers[0] if self._providers else None,
            "device": self.device,
            "device_id": self.device_id,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "sessions": len(self.sessions),
            "threads_per_session": self.sessions[0].threads if self.sessions else None,
        }

    # -- raw networks ---------------------------------------------------------------
    def infer(
        self, image: np.ndarray, audio: np.ndarray, *, session: int = 0, layout: str = "throughput"
    ) -> np.ndarray:
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

    def warmup(self, layout: str = "throughput", *, every_size: bool = False) -> list[int]:
        """Run each session of ``layout`` (and the encoder) once, so that the
        first real call does not pay for the runtime's first-run setup.

        Where the runtime plans per input shape (cuDNN's algorithm search,
        TensorRT's profiles, OpenVINO's static compiles), every batch size a
        live producer can send (1 .. ``batch_size``) is run once: a size
        first seen mid-conversation would stall it. With ``every_size`` (a
        long-lived server), every size is run twice on every runtime, the
        sessions side by side: ONNX Runtime's CPU memory pattern for a shape
        is planned on its first run and allocated on its second, so memory
        reaches its plateau here instead of in steps mid-conversation.
        Returns the batch sizes run.
        """
        if self.encoder is not None:
            self.encode(np.zeros((1, *MEL_SHAPE), np.float32))
        sessions = self.layout_sessions(layout)
        per_shape = every_size or any(s.per_shape for s in sessions)
        sizes = list(range(1, self._batch + 1)) if per_shape else [1]

        def run(sess: ModelSession) -> None:
            with self._locks[id(sess)]:
                for n in sizes * (2 if every_size else 1):
                    sess.run(**unet_feeds(sess.item_shapes, n))

        if every_size and len(sessions) > 1:
            with ThreadPoolExecutor(len(sessions), thread_name_prefix="synctalk-warmup") as pool:
                for done in [pool.submit(run, sess) for sess in sessions]:
                    done.result()
        else:
            for sess in sessions:
                run(sess)
        return sizes

    # -- the U-Net step -----------------------------------------------------------
    def prepare(
        self,
        items: Sequence[tuple[Template, int]],
        windows: np.ndarray,
        *,
        out: np.ndarray | None = None,
        timer: Timer = no_timer,
    ) -> StepBatch:
        """Network inputs of a batch (numerics §3.1-3.4); see :func:`.step.prepare_batch`."""
        return prepare_batch(items, windows, out=out, timer=timer)

    def run(self, batch: StepBatch, *, session: int = 0, timer: Timer = no_timer) -> StepBatch:
        """The U-Net on a prepared batch, on session number ``session``; sets
        ``batch.pred`` and returns the batch."""
        with timer("infer"):
            batch.pred = self.infer(batch.images[: len(batch)], batch.audio, session=session)
        return batch

    @staticmethod
    def paste(
        batch: StepBatch, *, feather: int = 0, out: np.ndarray | None = None, timer: Timer = no_timer
    ) -> Iterator[np.ndarray]:
        """Each frame of a run batch with its prediction pasted (numerics
        §3.6-3.7); see :func:`.step.paste_batch`."""
        return paste_batch(batch, feather=feather, out=out, timer=timer)

    def step(
        self, items: Sequence[tuple[Template, int]], windows: np.ndarray, *, feather: int = 0, session: int = 0
    ) -> list[np.ndarray]:
        """:meth:`prepare`, :meth:`run` and :meth:`paste` in one call: the
        lip-synced frames of ``items``, new BGR uint8 ``[H, W, 3]`` arrays."""
        return list(self.paste(self.run(self.prepare(items, windows), session=session), feather=feather))

    # -- session layouts ------------------------------------------------------------
    def layout_sessions(self, layout: str) -> list[ModelSession]:
        """The U-Net sessions of a layout: "throughput" is :attr:`sessions`
        (one per core on CPU); "latency" is one session on every core (each
        frame done soonest), made on first use; they are the same sessions
        on an accelerator or when the plan has one session."""
        check_layout(layout, allowed=SESSION_LAYOUTS)
        with self._scheduler.cond:
            return list(self._scheduler.pool(self._pool_name(layout)).sessions)

    def _pool_name(self, layout: str) -> str:
        """The latency layout is the throughput pool itself where they would hold the same sessions."""
        if layout == "latency" and (len(self.sessions) <= 1 or self.accelerator):
            return "throughput"
        return layout

    def _open_pool(self, layout: str) -> list[ModelSession]:
        """(Under the scheduler's lock.) The sessions of a layout's pool, opened on first use."""
        if layout == "latency":
            single = self._open_unet(default_threads())
            self._locks[id(single)] = threading.Lock()
            return [single]
        return list(self.sessions)

    def choose_layout(self, layout: str = "auto", *, fps: float = 25.0) -> str:
        """``"throughput"`` or ``"latency"`` for a live producer at ``fps``.

        "auto" measures once (per frame rate): "latency" if one session on
        every core keeps up with ``fps`` with the real-time margin
        (:data:`~synctalk_fast.models.timing.REALTIME_MARGIN`), else "throughput"
        (most frames per second when behind). On an accelerator, or with one
        session, both are the same sessions and the answer is "latency".
        """
        check_layout(layout, allowed=LAYOUTS)
        if self.accelerator or len(self.sessions) == 1:
            return "latency" if len(self.sessions) == 1 else "throughput"
        if layout != "auto":
            return layout
        if fps not in self._layout_choice:
            single = self.layout_sessions("latency")[0]
            self._layout_choice[fps] = measure_layout(
                single, self._locks[id(single)], fps=fps, sessions=len(self.sessions)
            )
        return self._layout_choice[fps]

    # -- shared scheduling ----------------------------------------------------------
    def attach(self, source: WorkSource, *, layout: str = "throughput") -> None:
        """Serve ``source`` from the sessions of ``layout`` (workers start on
        first use and end when no source is attached)."""
        check_layout(layout, allowed=SESSION_LAYOUTS)
        self._scheduler.attach(source, self._pool_name(layout))

    def detach(self, source: WorkSource) -> None:
        """Stop serving ``source`` (items it already gave are finished)."""
        self._scheduler.detach(source)

    def wake(self) -> None:
        """A source has new work (or room for more results)."""
        self._scheduler.wake()

    def producer(self, *, layout: str = "throughput") -> Producer:
        """A new :class:`~synctalk_fast.engine.scheduler.Producer` attached to this engine."""
        return Producer(self, layout=layout)

    def close(self) -> None:
        """Detach every source and end the workers (sessions stay usable for direct calls)."""
        self._scheduler.close()
