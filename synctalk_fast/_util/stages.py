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
from collections.abc import Callable, Iterable, Iterator, Sequence

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


def _produce(run: _Run, source: Iterable, outs: list[queue.Queue], background: bool) -> None:
    try:
        if background:
            lower_priority()
        for i, item in enumerate(source):
            if not run.put(outs[i % len(outs)], item):
                return
        for q in outs:
            run.put(q, _END)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        run.fail(exc)


def _work(
    run: _Run, fn: Callable, lane: int, width: int, ins: list[queue.Queue], outs: list[queue.Queue], background: bool
) -> None:
    """Worker ``lane`` of a stage ``width`` wide: items lane, lane + width, ...
    Item i comes from the upstream worker i % len(ins) and goes to the
    downstream worker i % len(outs), so order needs no reordering buffer."""
    try:
        if background:
            lower_priority()
        i = lane
        while True:
            item = run.get(ins[i % len(ins)])
            if item is _END:  # upstream has no item i, hence none after it
                for q in outs:
                    run.put(q, _END)
                return
            if not run.put(outs[i % len(outs)], fn(item)):
                return
            i += width
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        run.fail(exc)


def run_stages(
    source: Iterable,
    stages: Sequence[Callable | Sequence[Callable]],
    *,
    depth: int = 2,
    name: str = "stage",
    background: Sequence[int] = (),
) -> Iterator:
    """Iterate ``fn_k(...fn_1(item))`` for each item of ``source``, the
    source and each function in its own thread (see the module docstring).

    Parameters
    ----------
    source : iterable
        Iterated in a worker thread.
    stages : sequence of callables, or of sequences of callables
        Applied in order, each in its own thread. A stage given as several
        callables runs them in parallel threads, item ``i`` going to
        ``stage[i % len(stage)]`` (e.g. one ONNX Runtime session per core);
        results still come out in order.
    depth : int, keyword-only
        Capacity of each queue between two threads.
    name : str, keyword-only
        Prefix of the thread names (shown by debuggers and profilers).
    background : sequence of int, keyword-only
        Stages to run at a lower priority: 0 is the source, ``i`` is
        ``stages[i - 1]``.
    """
    run = _Run()
    widths = [1] + [len(st) if isinstance(st, Sequence) else 1 for st in stages] + [1]  # source, stages, caller
    # links[s][a][b]: from worker a of stage s to worker b of stage s + 1
    links: list[list[list[queue.Queue]]] = [
        [[queue.Queue(maxsize=depth) for _ in range(widths[s + 1])] for _ in range(widths[s])]
        for s in range(len(widths) - 1)
    ]
    threads = [
        threading.Thread(
            target=_produce, args=(run, source, links[0][0], 0 in background), name=f"{name}-source", daemon=True
        )
    ]
    for s, st in enumerate(stages, start=1):
        fns = list(st) if isinstance(st, Sequence) else [st]
        for lane, fn in enumerate(fns):
            ins = [links[s - 1][a][lane] for a in range(widths[s - 1])]
            label = getattr(getattr(fn, "func", fn), "__name__", str(s)) + (f"-{lane}" if len(fns) > 1 else "")
            threads.append(
                threading.Thread(
                    target=_work,
                    args=(run, fn, lane, len(fns), ins, links[s][lane], s in background),
                    name=f"{name}-{label}",
                    daemon=True,
                )
            )
    last = [links[-1][a][0] for a in range(widths[-2])]

    def results() -> Iterator:
        for t in threads:
            t.start()
        try:
            i = 0
            while True:
                item = run.get(last[i % len(last)])
                if item is _END:
                    break
                yield item
                i += 1
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
