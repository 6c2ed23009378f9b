"""Emission: the consumer's side of a stream (frames in order, idle pacing, stats).

:meth:`Emitter.poll` is the one step both consumers use, and it never
blocks: under the stream's lock it hands out the next frame in order if it
is done, or an idle frame if one is due, or says that none will come
(:data:`END`), or returns a :class:`Wait`: the state's change count it saw
and when the next idle frame is due. The consumer then waits for a change
after that count (or the due time), and polls again:

- :meth:`Emitter.next` in the consumer's thread, on the stream's condition;
- :meth:`Emitter.aframes` on an event loop: a future resolved by the
  producer side (:meth:`StreamState.notify` calls ``call_soon_threadsafe``)
  or by ``loop.call_later`` at the due time; no thread waits for it, and a
  cancelled wait has taken no frame (frames are taken only by ``poll``,
  which runs between awaits).

Idle frames (with ``idle``, while nothing is pending and the stream is
followed) are the template frames untouched at the frame rate, taking the
next positions of the sweep.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..template import Template
from .frame import StreamFrame
from .state import StreamState

__all__ = ["Emitter", "Wait", "END"]


class _End:
    """No frame is to come (see :meth:`Emitter.poll`)."""

    def __repr__(self) -> str:
        return "END"


#: What :meth:`Emitter.poll` and :meth:`Emitter.next` return when no frame is to come.
END = _End()


@dataclass(frozen=True)
class Wait:
    """Nothing to emit now: look again after a change past ``seen``, or at ``due``.

    ``seen`` is :attr:`StreamState.changes` when the poll looked; ``due``
    the ``perf_counter`` time the next idle frame is due (None: none is).
    """

    seen: int
    due: float | None


class _Idle(NamedTuple):
    pos: int
    now: float


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Emitter:
    """Hands a stream's frames to its one consumer, in order.

    Parameters
    ----------
    state : StreamState
    template : Template
    start : int
        Template frame offset (numerics §2).
    fps : float
    frame_samples : int
        Samples of an idle frame's (silent) audio.
    idle : bool
        Emit idle frames at the frame rate while following and nothing is pending.
    wake_engine : callable
        Tells the engine there is room for another frame.
    """

    def __init__(
        self,
        state: StreamState,
        *,
        template: Template,
        start: int,
        fps: float,
        frame_samples: int,
        idle: bool,
        wake_engine: Callable[[], None],
    ):
        self.state = state
        self.template = template
        self.start = start
        self.fps = fps
        self.frame_samples = frame_samples
        self.idle = idle
        self.wake_engine = wake_engine

    # -- the one non-blocking step -------------------------------------------------
    def poll(self, follow: bool) -> StreamFrame | Wait | _End:
        """The next frame if one is ready (or an idle frame is due), :data:`END`
        if none is to come, else a :class:`Wait`. Raises the stream's error."""
        with self.state.cond:
            got = self._poll_locked(follow, time.perf_counter())
        if isinstance(got, _Idle):  # made outside the lock: it reads the template
            return self._idle_frame(got)
        return got

    def _poll_locked(self, follow: bool, now: float) -> StreamFrame | _Idle | Wait | _End:
        st = self.state
        st.raise_error()
        f = st.done.pop(st.next_emit, None)
        if f is not None:
            self._emitted(f, now)
            return f
        due = None
        if follow and self.idle and not st.closed and st.next_pos == st.next_emit and not st.speaking():
            due = st.last_emit + 1.0 / self.fps
            if now >= due:
                pos = st.next_pos
                st.next_pos += 1
                st.next_emit += 1
                st.last_emit = now
                st.counts["idle_frames"] += 1
                return _Idle(pos, now)
        if st.quiet() and (not follow or (st.closed and not st.utts)):
            return END
        return Wait(st.changes, due)

    def _emitted(self, f: StreamFrame, now: float) -> None:
        """Bookkeeping of a frame handed out (under the lock)."""
        st = self.state
        st.next_emit += 1
        st.last_emit = f.emitted = now
        if st.ready_times and st.ready_times[0][0] == f.index:
            st.ready_times.popleft()
        st.counts["frames"] += 1
        st.waits.append(f.wait)
        st.delays.append(f.delay)
        st.notify()
        self.wake_engine()  # room for one more frame

    def _idle_frame(self, idle: _Idle) -> StreamFrame:
        k = int(self.template.order(1, start=self.start, first=idle.pos)[0])
        return StreamFrame(
            index=idle.pos,
            time=idle.pos / self.fps,
            image=self.template.frame(k),
            audio=np.zeros(self.frame_samples, np.float32),
            emitted=idle.now,
        )

    # -- waiting in a thread -------------------------------------------------------
    def next(self, follow: bool, timeout: float | None = None) -> StreamFrame | _End | None:
        """The next frame, :data:`END` when there is none to come, or None at ``timeout``."""
        st = self.state
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:
            got = self.poll(follow)
            if not isinstance(got, Wait):
                return got
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                return None
            wake = got.due if deadline is None else deadline if got.due is None else min(deadline, got.due)
            with st.cond:
                if st.changes == got.seen:
                    st.cond.wait(None if wake is None else max(0.0, wake - now))

    # -- waiting on an event loop --------------------------------------------------
    async def aframes(self, on_end: Callable[[], None]) -> AsyncIterator[StreamFrame]:
        """Frames as ``next(follow=True)`` gives them, waited for without a
        thread; ``on_end()`` is called after the last one."""
        loop = asyncio.get_running_loop()
        while True:
            got = self.poll(True)
            if isinstance(got, StreamFrame):
                yield got
            elif isinstance(got, Wait):
                await self._await_change(loop, got)
            else:
                on_end()
                return

    async def _await_change(self, loop: asyncio.AbstractEventLoop, wait: Wait) -> None:
        """Return at the first change after ``wait.seen`` or at ``wait.due``."""
        st = self.state
        fut: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # under the stream's lock, in any thread
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        timer = None if wait.due is None else loop.call_later(max(0.0, wait.due - time.perf_counter()), _resolve, fut)
        with st.cond:
            st.add_waiter(wake, wait.seen)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            with st.cond:
                st.remove_waiter(wake)

    # -- figures ------------------------------------------------------------------
    def backlog(self) -> int:
        """Frames whose audio has arrived but that are not yet emitted."""
        with self.state.cond:
            return len(self.state.ready_times)

    def lag(self) -> float:
        """Seconds the oldest computable, not yet emitted frame has waited since its audio arrived."""
        with self.state.cond:
            rt = self.state.ready_times
            return max(0.0, time.perf_counter() - rt[0][1]) if rt else 0.0

    def stats(self) -> dict[str, Any]:
        """Counters, ``backlog``, ``lag``, ``max_buffered``, and p50 / p95 / max of
        ``wait`` and ``delay`` (see :meth:`~synctalk_fast.Stream.stats`)."""
        st = self.state
        with st.cond:
            out: dict[str, Any] = dict(st.counts)
            waits, delays = np.array(st.waits), np.array(st.delays)
            out.update(backlog=len(st.ready_times), lag=self.lag(), max_buffered=st.max_buffered)
        for name, values in (("wait", waits), ("delay", delays)):
            for label, q in (("p50", 50), ("p95", 95), ("max", 100)):
                out[f"{name}_{label}"] = float(np.percentile(values, q)) if len(values) else math.nan
        return out
