"""Worker pools: the :class:`Pool` interface the scheduler drives, and the local process pool.

A pool has a fixed number of slots (``wid`` 0..n-1), each empty or holding
one worker (:mod:`.worker`). It is owned and driven by one thread of the
parent process (:class:`~synctalk_fast.batch.schedule.Scheduler`); workers
answer with :data:`~synctalk_fast.batch.worker.Event` messages. Two
implementations: :class:`LocalPool` (processes on this machine) and
:class:`~synctalk_fast.batch.ray.RayPool` (Ray actors).
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
from typing import Any, Protocol

from .manifest import BatchJob
from .worker import Event, worker_main

__all__ = ["Pool", "LocalPool"]


class Pool(Protocol):
    """What the scheduler needs of a pool of workers.

    Slots are numbered ``0..workers-1``; a job is sent to a started slot
    only when its previous job has ended (one job per worker at a time).
    """

    def start(self, wid: int) -> None:
        """A fresh worker in slot ``wid`` (replacing a dead one)."""

    def send(self, wid: int, job: BatchJob, attempt: int) -> None:
        """Hand ``job`` (its ``attempt``-th run) to slot ``wid``'s worker.

        A worker that is gone is not an error here: :meth:`dead` reports it.
        """

    def events(self, timeout: float) -> list[Event]:
        """The workers' messages ``(kind, wid, job line, data)``, waiting up to ``timeout`` seconds for one."""
        ...

    def dead(self) -> list[tuple[int, str]]:
        """Slots whose worker is gone, with why (each reported until :meth:`start` or :meth:`forget`)."""
        ...

    def kill(self, wid: int) -> None:
        """Stop slot ``wid``'s worker now (its job is abandoned)."""

    def forget(self, wid: int) -> None:
        """Empty slot ``wid`` (its worker died while idle)."""

    def close(self) -> None:
        """Stop every worker (letting idle ones exit) and release what the pool holds."""


class LocalPool:
    """Worker processes on this machine (spawn context), each with its own
    duplex pipe (jobs in, events out: a worker dying mid-send can only
    break its own pipe). Owned by the parent. Implements :class:`Pool`.

    Parameters
    ----------
    workers : int
        Slots.
    plan : dict
        Engine options of every worker (under each job's own).
    cores : list of (list of int or None)
        The cores each slot's process is pinned to (None: not pinned).
    crash : str
        The test hook (:data:`~synctalk_fast.batch.worker.TEST_CRASH_ENV`).
    """

    def __init__(self, workers: int, plan: dict[str, Any], cores: list[list[int] | None], crash: str = ""):
        self.ctx = mp.get_context("spawn")
        self.plan, self.cores, self.crash = plan, cores, crash
        self.procs: list[Any] = [None] * workers
        self.conns: list[Any] = [None] * workers

    def start(self, wid: int) -> None:
        if self.conns[wid] is not None:
            self.conns[wid].close()
        mine, theirs = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(
            target=worker_main,
            args=(wid, theirs, self.cores[wid], self.plan, self.crash),
            name=f"synctalk-batch-{wid}",
            daemon=True,
        )
        p.start()
        theirs.close()
        self.procs[wid], self.conns[wid] = p, mine

    def send(self, wid: int, job: BatchJob, attempt: int) -> None:
        try:
            self.conns[wid].send((job, attempt))
        except OSError:  # the worker is gone: dead() reports it
            pass

    def events(self, timeout: float) -> list[Event]:
        conns = [c for c in self.conns if c is not None]
        sentinels = [p.sentinel for p in self.procs if p is not None]
        ready = mp_connection.wait(conns + sentinels, timeout)
        got: list[Event] = []
        for c in conns:
            if c in ready:
                try:
                    while c.poll():
                        got.append(c.recv())
                except (EOFError, OSError):
                    pass
        return got

    def dead(self) -> list[tuple[int, str]]:
        return [
            (wid, f"exit code {p.exitcode}") for wid, p in enumerate(self.procs) if p is not None and not p.is_alive()
        ]

    def kill(self, wid: int) -> None:
        p = self.procs[wid]
        if p is not None and p.is_alive():
            p.terminate()
            p.join(timeout=5)

    def forget(self, wid: int) -> None:
        self.procs[wid] = None
        if self.conns[wid] is not None:
            self.conns[wid].close()
        self.conns[wid] = None

    def close(self) -> None:
        for wid, p in enumerate(self.procs):
            if p is not None and p.is_alive():
                try:
                    self.conns[wid].send(None)
                except OSError:
                    pass
        for p in self.procs:
            if p is not None:
                p.join(timeout=10)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
        for c in self.conns:
            if c is not None:
                c.close()
