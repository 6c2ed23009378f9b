"""The stream as the engine's work source: jobs out to the U-Net, frames back.

:class:`JobSource` is what a stream attaches to its
:class:`~synctalk_fast.engine.Engine`: the engine's worker for each U-Net
session calls :meth:`JobSource.take` for up to its batch size of jobs
(oldest first, within ``max_ready``), runs them (batched with other
producers' work) and hands each frame back through :meth:`JobSource.deliver`.
Frames whose audio arrived more than ``max_lag`` before they were taken go
as untouched template frames (``skipped``), so that a stream on hardware
slower than real time catches up instead of lagging more and more.

Threads: ``take`` and ``deliver`` run in the engine's worker threads, under
the stream's lock for the bookkeeping (never the engine's lock); a frame
of a stale generation is dropped on delivery.
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np

from ..engine import StepItem
from ..shapes import AUDIO_SHAPES
from ..template import Template
from .frame import StreamFrame
from .state import StreamState
from .utterance import Job

__all__ = ["JobSource"]

log = logging.getLogger("synctalk_fast.stream")


class JobSource:
    """The jobs of one stream, served to the engine's workers.

    Parameters
    ----------
    state : StreamState
    template : Template
    start : int
        Template frame offset (numerics §2).
    fps : float
    feather : int
        Soft paste band in pixels.
    max_ready : int
        Frames in compute or waiting for the consumer, at most.
    max_lag : float, optional
        Seconds a job may wait before it goes as a skipped template frame
        (None: never).
    """

    def __init__(
        self,
        state: StreamState,
        *,
        template: Template,
        start: int,
        fps: float,
        feather: int,
        max_ready: int,
        max_lag: float | None,
    ):
        self.state = state
        self.template = template
        self.start = start
        self.fps = fps
        self.feather = feather
        self.max_ready = max_ready
        self.max_lag = max_lag

    def take(self, limit: int) -> list[StepItem]:
        """Up to ``limit`` frames for the engine's U-Net, oldest first, within
        ``max_ready``; frames more than ``max_lag`` late go as untouched
        template frames (``window`` None)."""
        st = self.state
        with st.cond:
            room = self.max_ready - st.inflight - len(st.done)
            if st.stop or room <= 0 or not st.jobs:
                return []
            batch = [st.jobs.popleft() for _ in range(min(limit, len(st.jobs), room))]
            gen = st.gen
            st.inflight += len(batch)
            st.max_buffered = max(st.max_buffered, st.inflight + len(st.done))
            late = 0
            if self.max_lag is not None:  # ready times grow along the queue: the late ones lead
                now = time.perf_counter()
                late = next((j for j, job in enumerate(batch) if now - job.ready <= self.max_lag), len(batch))
                self._note_skips(late)
            windows = [
                None if j < late else job.utt.features.audio_window(job.i).reshape(AUDIO_SHAPES["ave"])
                for j, job in enumerate(batch)
            ]
            for job in batch:
                job.utt.taken = job.i + 1
                job.utt.features.release_frames(job.utt.taken)
        tpl = self.template
        return [
            StepItem(
                tpl,
                int(tpl.order(1, start=self.start, first=job.pos)[0]),
                w,
                functools.partial(self.deliver, job, gen, w is None),
                self.feather,
            )
            for job, w in zip(batch, windows)
        ]

    def deliver(self, job: Job, gen: int, skipped: bool, image: np.ndarray | None, error: BaseException | None) -> None:
        """A frame back from the engine (or the error that stopped its batch)."""
        if error is not None:
            self.state.fail(error)
            return
        assert image is not None
        f = self._frame(job, image, skipped=skipped)
        st = self.state
        with st.cond:
            if gen == st.gen:
                st.inflight -= 1
                st.done[f.index] = f
                st.notify()

    def _frame(self, job: Job, image: np.ndarray, *, skipped: bool = False) -> StreamFrame:
        return StreamFrame(
            index=job.pos,
            time=job.pos / self.fps,
            image=image,
            audio=job.audio,
            utterance=job.utt.number,
            frame=job.i,
            ready=job.ready,
            audio_in=job.audio_in,
            skipped=skipped,
            last=job.last,
        )

    def _note_skips(self, late: int) -> None:
        """Count frames emitted unsynced; warn once per stream (under the lock)."""
        counts = self.state.counts
        if late and not counts["skipped_frames"]:
            log.warning(
                "stream is more than %.2f s behind its audio: emitting template frames until it "
                "catches up (counted in Stream.stats()['skipped_frames'])",
                self.max_lag,
            )
        counts["skipped_frames"] += late
