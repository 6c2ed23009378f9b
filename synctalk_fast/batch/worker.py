"""A batch worker: renders the jobs it is handed, one at a time, keeping what it loaded.

:class:`JobRunner` is a worker's state, the same in a local process
(:func:`worker_main`) and in a Ray actor (:mod:`.ray`): an LRU of
:class:`~synctalk_fast.pipeline.Pipeline` keyed by networks and options
(each keeps its last template's decoded frames). It writes only the output
of the job it runs, atomically (:meth:`Pipeline.generate` renames a hidden
``.<name>.<hex>.part`` when done), and reports through messages
(:data:`Event`): ``("frames", wid, line, n)`` while rendering, then one
``("done" | "failed", wid, line, data)``. A job's failure is a message; the
worker goes on.

The engine options a job runs with, lowest first: the engine's defaults,
the worker's ``plan`` (the parent's share of the cores: sessions, threads),
then the job's own options (its manifest row, with ``render_batch``'s
options on top).
"""

from __future__ import annotations

import json
import multiprocessing.connection as mp_connection
import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.options import EngineOptions
from ..pipeline import Pipeline
from .manifest import GENERATE_KEYS, BatchJob

__all__ = ["JobRunner", "Ticker", "Event", "worker_main", "one_line", "pin", "PIPELINES_PER_WORKER", "TEST_CRASH_ENV"]

#: A worker's message: ``(kind, worker slot, manifest line, data)``; kind is
#: ``"frames"`` (data: frames since the last one), ``"done"`` (data:
#: ``frames``, ``seconds``, ``engine``) or ``"failed"`` (``error``,
#: ``seconds``, ``trace``).
Event = tuple[str, int, int, Any]
#: Loaded pipelines a worker keeps (least recently used dropped first).
PIPELINES_PER_WORKER = 2
#: TEST ONLY: ``"<output name>:<attempts>"`` makes a worker call ``os._exit``
#: midway through that job's frames on its first ``attempts`` attempts.
TEST_CRASH_ENV = "SYNCTALK_FAST_BATCH_TEST_CRASH"
_CRASH_EXIT = 86
#: Keys of a job that are options of the Pipeline but not of its engine.
_PIPELINE_ONLY = ("mode", "overlap")


class Ticker:
    """A sink that reports frames through ``send`` (every ``every`` frames),
    and the test-only crash hook (:data:`TEST_CRASH_ENV`)."""

    def __init__(self, send: Callable[[Event], Any], wid: int, job: int, crash_at: int | None, every: int = 8):
        self.send, self.wid, self.job, self.crash_at, self.every = send, wid, job, crash_at, every
        self.count = self.sent = 0

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Count a frame (uint8 ``[H, W, 3]``; not kept)."""
        self.count += 1
        if self.crash_at is not None and self.count >= self.crash_at:
            os._exit(_CRASH_EXIT)  # TEST ONLY: die mid-job, with a partial output on disk
        if self.count - self.sent >= self.every:
            self.flush()

    def flush(self) -> None:
        """Send the frames counted since the last message."""
        if self.count > self.sent:
            self.send(("frames", self.wid, self.job, self.count - self.sent))
            self.sent = self.count

    close = flush

    def abort(self) -> None:
        """Nothing to undo."""


def crash_at(job: BatchJob, attempt: int, crash: str) -> int | None:
    """The frame at which the test hook ``crash`` (:data:`TEST_CRASH_ENV`) kills this attempt, if any."""
    name, _, attempts = crash.rpartition(":")
    if name and name == job.name and attempts.isdigit() and attempt <= int(attempts):
        return 3
    return None


def one_line(e: BaseException) -> str:
    """An exception as one line: ``Type: first line of its message``."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def pin(cores: list[int] | None) -> None:
    """Run this process on ``cores``: its defaults (threads, encoder) follow them."""
    if cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cores)
        except OSError:
            pass


class JobRunner:
    """A worker's state: an LRU of :class:`Pipeline` (at most
    :data:`PIPELINES_PER_WORKER`). Runs one job at a time, in the calling
    thread, and writes only that job's output.

    Parameters
    ----------
    wid : int
        The worker's slot (in its messages).
    plan : dict
        Engine options under every job's own (the worker's share of the
        cores: ``sessions``, ``threads``; empty on an accelerator).
    crash : str
        The test hook (:data:`TEST_CRASH_ENV`); empty in use.
    """

    def __init__(self, wid: int, plan: dict[str, Any], crash: str = ""):
        self.wid, self.crash = wid, crash
        self.plan = EngineOptions().replace(**plan)
        self.pipelines: OrderedDict[tuple[str, ...], Pipeline] = OrderedDict()

    def pipeline(self, job: BatchJob) -> Pipeline:
        """The loaded pipeline for ``job``'s networks and options (loaded if new)."""
        engine = EngineOptions.from_mapping(job.engine_options, base=self.plan)
        own = {k: job.options[k] for k in _PIPELINE_ONLY if k in job.options}
        key = (
            str(job.inputs["unet"]),
            str(job.inputs.get("audio_encoder")),
            json.dumps({**engine.to_dict(), **own}, sort_keys=True, default=str),
        )
        pipe = self.pipelines.pop(key, None)
        if pipe is None:
            while len(self.pipelines) >= PIPELINES_PER_WORKER:
                self.pipelines.popitem(last=False)
            pipe = Pipeline(job.inputs["unet"], job.inputs.get("audio_encoder"), **own, **engine.changed())
        self.pipelines[key] = pipe
        return pipe

    def run(self, job: BatchJob, attempt: int, send: Callable[[Event], Any]) -> Event:
        """Render ``job`` (its ``attempt``-th run); ``send`` takes the frame
        messages. Returns the closing message, ``("done" | "failed", wid,
        line, data)``."""
        t0 = time.perf_counter()
        try:
            pipe = self.pipeline(job)
            ticker = Ticker(send, self.wid, job.line, crash_at(job, attempt, self.crash))
            gopts = {k: v for k, v in job.options.items() if k in GENERATE_KEYS}
            result = pipe.generate(
                job.inputs.get("audio"),
                features=job.inputs.get("features"),
                template=job.inputs["template"],
                output=[job.output, ticker],
                progress=False,
                **gopts,
            )
            return (
                "done",
                self.wid,
                job.line,
                {"frames": result.frames, "seconds": time.perf_counter() - t0, "engine": dict(result.engine)},
            )
        except Exception as e:  # the job fails, the worker goes on
            return (
                "failed",
                self.wid,
                job.line,
                {"error": one_line(e), "seconds": time.perf_counter() - t0, "trace": traceback.format_exc()},
            )


def worker_main(
    wid: int, conn: mp_connection.Connection, cores: list[int] | None, plan: dict[str, Any], crash: str
) -> None:
    """A local worker process: render the ``(job, attempt)`` pairs ``conn``
    brings, answering on it, until None or the parent is gone."""
    pin(cores)
    runner = JobRunner(wid, plan, crash)
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if msg is None:
            return
        job, attempt = msg
        conn.send(runner.run(job, attempt, conn.send))
