"""The feature thread: new audio -> features -> jobs for the engine.

:class:`FeatureThread` drives each utterance's
:class:`~synctalk_fast.live_features.UtteranceFeatures`: it extends the mel
spectrogram by the frames that no later sample can change, encodes the
encoder windows that lie inside them, and turns every frame whose 16
feature rows are known into a :class:`~.utterance.Job` (then wakes the
engine, whose workers take the jobs).

Threads: one thread per stream. Plans, embeddings and jobs are made under
the stream's lock; the mel spectrogram and the encoder run outside it, on
state only this thread touches, while pushes go on. ``busy`` is set while it
holds work outside the lock, and cleared in the same critical section that
adds the jobs, so the stream never looks quiet in between. Work of an older
generation (an interrupt came meanwhile) or of a dropped utterance is
thrown away.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..live_features import ENCODER_BATCH, EncoderBatch, MelPlan, UtteranceFeatures, frame_need
from .state import StreamState
from .utterance import Job, Utterance

__all__ = ["FeatureThread"]


class FeatureThread:
    """The thread that turns a stream's audio into jobs.

    Parameters
    ----------
    state : StreamState
    encode : callable
        The audio encoder: float32 ``[N, 1, 80, 16]`` -> ``[N, 512]``.
    wake_engine : callable
        Tells the engine there are jobs to take.
    frame_samples : int
        16 kHz samples per video frame (640).
    """

    def __init__(
        self,
        state: StreamState,
        encode: Callable[[np.ndarray], np.ndarray],
        wake_engine: Callable[[], None],
        frame_samples: int,
    ):
        self.state = state
        self.encode = encode
        self.wake_engine = wake_engine
        self.frame_samples = frame_samples
        self.thread = threading.Thread(target=self._run, name="synctalk-stream-features", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        """Wait for the thread to end (after the state's ``stop``); a no-op from the thread itself."""
        if self.thread is not threading.current_thread() and self.thread.ident is not None:
            self.thread.join()

    def _run(self) -> None:
        try:
            while True:
                got = self._next_work()
                if got is None:
                    return
                utt, gen, plan = got
                feats = utt.features
                if plan is not None:  # mel frames that are now final (this thread's own state)
                    feats.compute_mel(plan)
                batch = feats.encoder_windows(ENCODER_BATCH)
                emb = self.encode(batch.windows) if batch is not None and batch.size else None
                self._finish(utt, gen, batch, emb)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.state.fail(exc)

    def _next_work(self) -> tuple[Utterance, int, MelPlan | None] | None:
        """Wait for an utterance with work; None once the stream stops."""
        st = self.state
        with st.cond:
            while True:
                if st.stop:
                    return None
                utt = st.work()
                if utt is not None:
                    break
                st.cond.wait()
            utt.dirty = False
            plan = utt.features.mel_plan()  # a copy of the samples it needs
            st.busy = True
            return utt, st.gen, plan

    def _finish(self, utt: Utterance, gen: int, batch: EncoderBatch | None, emb: np.ndarray | None) -> None:
        """Add the embeddings computed outside the lock and make the jobs they allow."""
        st = self.state
        with st.cond:
            st.busy = False  # in the same critical section as the jobs: never quiet in between
            st.notify()
            if gen != st.gen or utt.dropped:
                return
            if batch is not None:
                utt.features.add_embeddings(emb, batch)
                if batch.more:
                    utt.dirty = True
            self._make_jobs(utt)
            st.notify()

    def _make_jobs(self, utt: Utterance) -> None:
        """Jobs for the frames whose feature rows are now all known (under the lock)."""
        st = self.state
        feats: UtteranceFeatures = utt.features
        f_to = max(utt.made, feats.frames_known())
        if f_to > utt.made and utt.base is None:
            utt.base = st.next_pos
        n = self.frame_samples
        for i in range(utt.made, f_to):
            ready = utt.arrival(frame_need(i))  # the flush, for frames that need the utterance's end
            audio_in = utt.arrival(n * i + 1)
            job = Job(
                st.next_pos,
                utt,
                i,
                feats.samples(n * i, n * (i + 1)),
                ready,
                audio_in,
                feats.complete and i == f_to - 1,
            )
            st.next_pos += 1
            st.jobs.append(job)
            st.ready_times.append((job.pos, ready))
        utt.made = f_to
        keep = feats.release_samples(n * utt.made)  # the frames' audio, and what the mel needs
        utt.forget_pushes(keep)
        if st.jobs:
            self.wake_engine()  # the engine's workers take() them
