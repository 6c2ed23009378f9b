"""The batch scheduler: hands jobs to a pool's workers and records how each ends.

:class:`Scheduler` runs in the parent process, in the thread that calls
:meth:`Scheduler.run`; it is the only writer of the results (the dict, the
digest sidecars and ``results.jsonl``). Jobs come in groups (by U-Net and
template): a worker takes the next job of the group it worked on first, so
that it reuses what it loaded; a free worker takes a group nobody works on,
else shares the largest. A job whose worker dies is retried on a fresh
worker (first in line) up to ``retries`` times, its partial output deleted.
When :meth:`Scheduler.run` ends, by completion or by an exception, no
worker is left running and no partial output is left behind.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .._util.progress import progress_bar
from .manifest import BatchJob
from .pools import Pool
from .resume import JobResult, discard_parts, write_results, write_sidecar

__all__ = ["Scheduler", "Group", "Item"]

#: Jobs sharing a U-Net and a template (:attr:`BatchJob.group`).
Group = tuple[str, str]
#: A job to run, with its digest.
Item = tuple[BatchJob, str]


class Scheduler:
    """Drive ``pool`` over the jobs of ``groups`` until each has a result.

    Parameters
    ----------
    pool : Pool
        The workers, slots ``0..workers-1`` (started here, closed at the end).
    groups : dict of Group to list of Item
        The jobs to run, by group, in order.
    results : dict of int to JobResult
        Manifest line -> result; filled in here (already holds skipped jobs).
    manifest : Path
        ``results.jsonl``, rewritten as each job ends.
    workers : int
        The pool's slots.
    retries : int
        Reruns of a job whose worker died.
    progress : bool
        Show a jobs bar (on a terminal).
    total : int
        Jobs in the manifest (the bar's length).
    """

    def __init__(
        self,
        pool: Pool,
        groups: dict[Group, list[Item]],
        results: dict[int, JobResult],
        manifest: Path,
        *,
        workers: int,
        retries: int,
        progress: bool,
        total: int,
    ):
        self.pool, self.results, self.manifest = pool, results, manifest
        self.workers, self.retries = workers, retries
        self.pending: OrderedDict[Group, list[Item]] = OrderedDict((g, list(items)) for g, items in groups.items())
        self.attempts: dict[int, int] = {}  # manifest line -> worker runs so far
        self.running: dict[int, Item] = {}  # worker slot -> its job
        self.last_group: dict[int, Group] = {}  # worker slot -> the group it worked on last
        self.idle: list[int] = []
        self.frames = 0
        self.t_start = time.perf_counter()
        self.bar = progress_bar(total, "jobs", progress, unit="job")
        if self.bar is not None:
            self.bar.update(len(results))

    def run(self) -> None:
        """Run every job; record each result as it comes."""
        try:
            for wid in range(self.workers):
                self.pool.start(wid)
                self._dispatch(wid)
            while self.running:
                for kind, wid, line, data in self.pool.events(0.2):
                    self._on_event(kind, wid, line, data)
                for wid, why in self.pool.dead():
                    self._on_dead(wid, why)
        finally:
            self._close()

    def _next_for(self, wid: int) -> Item | None:
        """The next job for worker ``wid``: of its own group first."""
        g = self.last_group.get(wid)
        if g is None or not self.pending.get(g):  # a group nobody works on, else share the largest one
            busy = {self.last_group.get(w) for w in self.running}
            free = [k for k, v in self.pending.items() if v and k not in busy]
            rest = [k for k, v in self.pending.items() if v]
            if not rest:
                return None
            g = free[0] if free else max(rest, key=lambda k: len(self.pending[k]))
        self.last_group[wid] = g
        return self.pending[g].pop(0)

    def _dispatch(self, wid: int) -> None:
        """Send worker ``wid`` its next job, or mark it idle."""
        item = self._next_for(wid)
        if item is None:
            self.idle.append(wid)
            return
        job = item[0]
        self.attempts[job.line] = self.attempts.get(job.line, 0) + 1
        self.running[wid] = item
        self.pool.send(wid, job, self.attempts[job.line])

    def _finish(self, line: int, result: JobResult) -> None:
        self.results[line] = result
        write_results(self.manifest, self.results)
        if self.bar is not None:
            self.bar.update(1)

    def _on_event(self, kind: str, wid: int, line: int, data: Any) -> None:
        """A worker's message (:data:`~synctalk_fast.batch.worker.Event`)."""
        if wid not in self.running or self.running[wid][0].line != line:
            return  # a message of a job already written off
        job, digest = self.running[wid]
        if kind == "frames":
            self.frames += data
            if self.bar is not None:
                rate = self.frames / max(time.perf_counter() - self.t_start, 1e-9)
                self.bar.set_postfix_str(f"{self.frames} frames, {rate:.1f} frames/s")
            return
        if kind not in ("done", "failed"):
            return
        del self.running[wid]
        seconds = round(data["seconds"], 3)
        if kind == "done":
            write_sidecar(job, digest, data["frames"])
            self._finish(
                line,
                JobResult(
                    line,
                    "done",
                    str(job.output),
                    data["frames"],
                    seconds,
                    None,
                    self.attempts[line],
                    data.get("engine"),
                ),
            )
        else:
            self._finish(
                line, JobResult(line, "failed", str(job.output), 0, seconds, data["error"], self.attempts[line])
            )
        self._dispatch(wid)

    def _on_dead(self, wid: int, why: str) -> None:
        """Worker ``wid`` is gone: retry its job (or fail it), start a fresh worker in its slot."""
        if wid not in self.running:  # died idle: leave the slot empty
            self.pool.forget(wid)
            if wid in self.idle:
                self.idle.remove(wid)
            return
        job, digest = self.running.pop(wid)
        discard_parts(job.output)  # the dead worker's partial output
        tries = self.attempts[job.line]
        if tries <= self.retries:
            self.pending.setdefault(job.group, []).insert(0, (job, digest))
            self.pending.move_to_end(job.group, last=False)
        else:
            self._finish(
                job.line,
                JobResult(
                    job.line,
                    "failed",
                    str(job.output),
                    0,
                    0.0,
                    f"worker process died ({why}) on each of {tries} attempts",
                    tries,
                ),
            )
        self.pool.start(wid)  # a fresh worker in the slot
        self.last_group.pop(wid, None)
        self._dispatch(wid)
        while self.idle and any(self.pending.values()):  # a retried job may wait for an idle worker
            self._dispatch(self.idle.pop())

    def _close(self) -> None:
        """Stop the workers; an interrupted job's partial output is deleted."""
        for wid, (job, _) in self.running.items():
            self.pool.kill(wid)
            discard_parts(job.output)
        self.pool.close()
        if self.bar is not None:
            self.bar.close()
