"""The state a stream's threads share, its lock and its wake-ups.

:class:`StreamState` holds everything the caller's thread (pushes, flush,
interrupt, close), the feature thread, the engine's workers and the
consumer (a thread, or a coroutine on an event loop) share.

Invariants:

- every field is guarded by ``cond``'s lock; the stream's input lock (the
  chunk converter's) is always taken before it, never after; the engine's
  scheduler lock may be taken under it (:meth:`Engine.wake`), never the
  other way round;
- every change another party may wait for goes through :meth:`StreamState.notify`
  (under the lock): it bumps ``changes``, wakes the threads waiting on
  ``cond`` and calls the one-shot asyncio waiters once each (they resolve
  a future on their loop with ``call_soon_threadsafe``: nothing waits in a
  thread for an async consumer);
- results carry the generation ``gen`` they were made in; :meth:`StreamState.drop_all`
  (an interrupt) bumps it, and results of an older one are dropped;
- at most ``max_ready`` frames are in compute (``inflight``) or waiting for
  the consumer (``done``), so memory stays flat whatever the consumer's pace.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

from .frame import StreamFrame
from .utterance import Job, Utterance

__all__ = ["StreamState", "Waiter"]

#: Called under the lock on the next change (once); must not block.
Waiter = Callable[[], None]


class StreamState:
    """Fields shared by a stream's threads, all guarded by ``cond``'s lock."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.changes = 0  # bumped by every notify(): a waiter compares it with the value it last saw
        self._waiters: list[Waiter] = []
        self.gen = 0
        self.utts: deque[Utterance] = deque()  # oldest first; the last one may be open
        self.jobs: deque[Job] = deque()
        self.inflight = 0  # jobs in the workers (current generation)
        self.done: dict[int, StreamFrame] = {}  # position -> frame, waiting for the consumer
        self.ready_times: deque[tuple[int, float]] = deque()  # (position, ready) of frames not emitted
        self.next_pos = 0  # next stream position to give out
        self.next_emit = 0  # next position the consumer gets
        self.last_emit = -math.inf
        self.busy = False  # the feature thread holds work outside the lock
        self.closed = False
        self.stop = False
        self.error: BaseException | None = None
        self.counts = {
            "frames": 0,
            "idle_frames": 0,
            "skipped_frames": 0,
            "dropped_frames": 0,
            "utterances": 0,
            "interrupts": 0,
        }
        self.waits: deque[float] = deque(maxlen=100_000)
        self.delays: deque[float] = deque(maxlen=100_000)
        self.max_buffered = 0

    # -- wake-ups (under the lock) ----------------------------------------------------
    def notify(self) -> None:
        """Something changed: wake every thread on ``cond`` and every asyncio waiter."""
        self.changes += 1
        self.cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    def add_waiter(self, wake: Waiter, seen: int) -> None:
        """Call ``wake`` at the first change after ``seen`` (at once if there was one)."""
        if self.changes != seen:
            wake()
        else:
            self._waiters.append(wake)

    def remove_waiter(self, wake: Waiter) -> None:
        """Forget ``wake`` if it is still waiting (its consumer stopped waiting)."""
        if wake in self._waiters:
            self._waiters.remove(wake)

    # -- queries and changes (under the lock) ---------------------------------------
    def open_utterance(self) -> Utterance:
        """The open utterance (a new one after a flush or an interrupt)."""
        if not self.utts or self.utts[-1].closed:
            self.utts.append(Utterance(self.counts["utterances"]))
            self.counts["utterances"] += 1
        return self.utts[-1]

    def work(self) -> Utterance | None:
        """The oldest utterance with work for the feature thread (finished ones are forgotten)."""
        while self.utts and self.utts[0].finished:
            self.utts.popleft()
        return next((u for u in self.utts if u.dirty), None)

    def speaking(self) -> bool:
        """An utterance has frames out and more to come."""
        return any(u.made > 0 and not u.finished for u in self.utts)

    def quiet(self) -> bool:
        """Nothing in the feature thread, the job queue, the workers or the output."""
        return not (self.busy or self.jobs or self.inflight or self.done or self.work() is not None)

    def fail(self, exc: BaseException) -> None:
        """Stop the stream with ``exc`` (the first error wins); the consumer raises it."""
        with self.cond:
            if self.error is None:
                self.error = exc
            self.stop = True
            self.notify()

    def raise_error(self) -> None:
        """Raise the error that stopped the stream, if any."""
        if self.error is not None:
            raise self.error

    def drop_all(self) -> int:
        """Drop every utterance, job and frame not yet emitted and start a new
        generation; the next frame takes the next position. Returns the count dropped."""
        self.gen += 1
        dropped = len(self.ready_times)
        self.counts["dropped_frames"] += dropped
        self.counts["interrupts"] += 1
        for utt in self.utts:
            utt.dropped = True
        self.utts.clear()
        self.jobs.clear()
        self.done.clear()
        self.ready_times.clear()
        self.inflight = 0
        self.next_pos = self.next_emit
        self.notify()
        return dropped
