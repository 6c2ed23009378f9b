"""Overlapped stages: worker threads joined by bounded queues.

``run_stages(source, [f1, f2, ...])`` runs the iteration of ``source`` in
one thread and each ``f`` in a thread of its own; the caller's thread gets
the last stage's results, in source order, by iterating. It is the engine of
:meth:`synctalk_fast.Pipeline.frames`: the heavy work of every stage (JPEG
decode, the C++ kernels, ONNX Runtime, libx264) runs with the GIL released,
so the stages proceed on different cores at once.

Invariants:

- each queue holds at most ``depth`` items, so at most ``depth + 1`` items
  per stage are alive and memory stays bounded whatever the input's length;
- order is kept: every stage is one thread consuming its queue in order;
- threads named in ``background`` run at the lowest OS priority (Linux
  SCHED_IDLE, for that thread and any thread it starts, e.g. libx264's):
  they never preempt ONNX Runtime's threads, whose parallel loops would
  otherwise stall waiting for a preempted thread; the background work runs
  in the gaps, and when ONNX Runtime waits because a bounded queue ahead of
  it is full;
- the first exception in any stage (or in the caller, or closing the
  iterator early) sets ``stop``; every thread polls it while blocked on a
  queue and exits, and the exception is re-raised in the caller's thread as
  it was raised (same object, same traceback).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Iterable, Iterator, Sequence

__all__ = ["run_stages", "lower_priority"]

_POLL = 0.05  # seconds between checks of the stop flag while blocked
_END = object()
def lower_priority() -> bool:
    """Make the calling thread (and threads it starts later) a background
    thread: Linux SCHED_IDLE, which runs only on cores nothing else wants;
    elsewhere a no-op. Returns whether the priority was changed. It cannot
    be raised back without privileges, so only call it in a thread that
    ends with its work."""
    if not hasattr(os, "SCHED_IDLE") or not hasattr(threading, "get_native_id"):
        return False
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        return False
    return True


class _Run:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        return _END


def _produce(run: _Run, source: Iterable, out: queue.Queue, background: bool) -> None:
    try:
        if background:
            lower_priority()
        for item in source:
            if not run.put(out, item):
                return
        run.put(out, _END)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        run.fail(exc)


def _work(run: _Run, fn: Callable, inq: queue.Queue, out: queue.Queue, background: bool) -> None:
    try:
        if background:
            lower_priority()
        while True:
            item = run.get(inq)
            if item is _END:
                run.put(out, _END)
                return
            if not run.put(out, fn(item)):
                return
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        run.fail(exc)


def run_stages(source: Iterable, stages: list[Callable], *, depth: int = 2, name: str = "stage",
               background: Sequence[int] = ()) -> Iterator:
    """Iterate ``fn_k(...fn_1(item))`` for each item of ``source``, the
    source and each function in its own thread (see the module docstring).

    Parameters
    ----------
    source : iterable
        Iterated in a worker thread.
    stages : list of callables
        Applied in order, each in its own thread.
    depth : int, keyword-only
        Capacity of each queue between two threads.
    name : str, keyword-only
        Prefix of the thread names (shown by debuggers and profilers).
    background : sequence of int, keyword-only
        Threads to run at a lower priority: 0 is the source, ``i`` is
        ``stages[i - 1]``.
    """
    run = _Run()
    queues = [queue.Queue(maxsize=depth) for _ in range(len(stages) + 1)]
    threads = [threading.Thread(target=_produce, args=(run, source, queues[0], 0 in background), name=f"{name}-source", daemon=True)]
    for i, fn in enumerate(stages):
        threads.append(threading.Thread(target=_work, args=(run, fn, queues[i], queues[i + 1], i + 1 in background),
                                        name=f"{name}-{getattr(fn, '__name__', i)}", daemon=True))

    def results() -> Iterator:
        for t in threads:
            t.start()
        try:
            while True:
                item = run.get(queues[-1])
                if item is _END:
                    break
                yield item
            if run.error is not None:
                raise run.error
        except BaseException as exc:
            run.fail(exc)
            raise
        finally:
            run.stop.set()
            for t in threads:
                t.join()
            # A worker's exception reaches the caller once, as raised; drop
            # the traceback's reference cycle through this frame.
            run.error = None

    return results()
