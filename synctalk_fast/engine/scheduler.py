"""Shared scheduling: producers that run at the same time (live streams, jobs) share the U-Net sessions.

A producer is a :class:`WorkSource` attached to a :class:`Scheduler`, or
the ready-made :class:`Producer` (``submit`` returns a future). One worker
per session takes items from the attached sources in turn, so a batch may
hold items of several producers, each producer gets a fair share, and each
producer's items are taken in the order it offers them.

Threads and locks: one worker thread per session of a pool, started on the
first attach and ended when no source is left. Lock order: a source's own
lock, then the scheduler's; the scheduler never holds its lock while
calling a source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..models.session import ModelSession
from ..shapes import IMAGE_SHAPE
from ..template import Template
from .step import paste_batch, prepare_batch

if TYPE_CHECKING:
    from .core import Engine

__all__ = ["StepItem", "WorkSource", "Producer", "Scheduler"]


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
    sources: list[WorkSource] = field(default_factory=list)
    workers: dict[int, threading.Thread] = field(default_factory=dict)  # session number -> its worker
    pending: bool = False
    turn: int = 0


class Scheduler:
    """The pools of an engine's session layouts and their workers.

    ``open_pool(layout)`` (called under the scheduler's lock) gives the
    sessions of a layout the first time it is used; ``locks`` maps
    ``id(session)`` to the lock that makes each session run one call at a time.
    """

    def __init__(
        self, batch_size: int, open_pool: Callable[[str], list[ModelSession]], locks: dict[int, threading.Lock]
    ):
        self.batch_size = batch_size
        self._open_pool = open_pool
        self._locks = locks
        self.cond = threading.Condition()
        self._pools: dict[str, _Pool] = {}
        self._closed = False

    def pool(self, layout: str) -> _Pool:
        """(Under the lock.) The pool of a layout, created on first use."""
        pool = self._pools.get(layout)
        if pool is None:
            pool = self._pools[layout] = _Pool(layout, self._open_pool(layout))
        return pool

    def attach(self, source: WorkSource, layout: str) -> None:
        with self.cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            pool = self.pool(layout)
            pool.sources.append(source)
            pool.pending = True
            for k in range(len(pool.sessions)):
                if k not in pool.workers:
                    t = threading.Thread(
                        target=self._serve, args=(pool, k), name=f"synctalk-engine-{pool.name}-{k}", daemon=True
                    )
                    pool.workers[k] = t
                    t.start()
            self.cond.notify_all()

    def detach(self, source: WorkSource) -> None:
        with self.cond:
            for pool in self._pools.values():
                if source in pool.sources:
                    pool.sources.remove(source)
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            for pool in self._pools.values():
                pool.pending = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self._closed = True
            for pool in self._pools.values():
                pool.sources.clear()
            self.cond.notify_all()

    def _gather(self, pool: _Pool, limit: int) -> list[StepItem]:
        """Up to ``limit`` items, a fair share from each source in turn."""
        with self.cond:
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
        images = np.empty((self.batch_size, *IMAGE_SHAPE), np.float32)
        while True:
            with self.cond:
                while not pool.pending and pool.sources and not self._closed:
                    self.cond.wait()
                if not pool.sources or self._closed:
                    del pool.workers[k]
                    return
                pool.pending = False
            items = self._gather(pool, self.batch_size)
            if not items:
                continue
            if len(items) == self.batch_size:  # there may be more: let another worker look
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
                windows = np.stack([items[j].window for j in run])  # type: ignore[misc]
                batch = prepare_batch([(items[j].template, items[j].index) for j in run], windows, out=images)
                with self._locks[id(sess)]:
                    batch.pred = sess.run(image=batch.images[: len(batch)], audio=batch.audio)
                for j, pasted in zip(run, paste_batch(batch, feather=[items[j].feather for j in run])):
                    results[j] = pasted
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

    def submit(
        self, template: Template, index: int, window: np.ndarray | None, *, feather: int = 0
    ) -> Future[np.ndarray]:
        """Queue template frame ``index`` with feature window ``window``
        (float32 ``[C, H, W]``; None: the template frame untouched)."""
        fut: Future[np.ndarray] = Future()

        def done(frame: np.ndarray | None, error: BaseException | None) -> None:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(frame)  # type: ignore[arg-type]

        item = StepItem(
            template, int(index), None if window is None else np.asarray(window, np.float32), done, int(feather)
        )
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

    def __exit__(self, *exc: object) -> None:
        self.close()
