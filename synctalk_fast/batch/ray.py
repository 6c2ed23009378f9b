"""Batch workers as Ray actors: the Ray pool, shipping inputs through the object store, connecting.

Ray is optional (the ``[ray]`` extra) and slow to import: it is imported on
first use (:func:`import_ray`). The parent owns the connection to the
cluster (:func:`connect_ray`; it shuts down only a Ray it started) and the
:class:`RayPool`. Each actor (:class:`RayWorker`) wraps a
:class:`~synctalk_fast.batch.worker.JobRunner`: frame counts go to the
parent through a Ray queue, a job's closing message is the result of its
``run`` call. Inputs are read from their paths (a file system shared with
the cluster) or, after :meth:`RayPool.ship`, from the object store,
unpacked once per node under :data:`SHIPPED_DIR`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .._util.system import cpu_cores
from .manifest import BatchJob
from .resume import file_digest
from .worker import Event, JobRunner, one_line, pin

__all__ = ["RayPool", "RayWorker", "import_ray", "connect_ray", "SHIPPED_DIR", "Shipped"]

#: Where a Ray worker unpacks shipped inputs: node-local, shared by the
#: actors of a node, one folder per input content.
SHIPPED_DIR = "synctalk_fast_inputs"
#: A shipped input: (content key, file or folder name, is a folder, object ref).
Shipped = tuple[str, str, bool, Any]


def import_ray() -> Any:
    """Ray, imported on first use: optional (the ``[ray]`` extra), and slow to import.

    Raises
    ------
    ValueError
        Ray is not installed (one line saying how to install it).
    """
    try:
        import ray
        import ray.util.queue
    except ImportError:
        raise ValueError("Ray is not installed: pip install 'synctalk-fast[ray]'") from None
    return ray


def _pack(path: Path) -> bytes:
    """A file's bytes, or a folder as an uncompressed tar of its contents (links followed)."""
    if not path.is_dir():
        return path.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:  # the files, not links to them
        tar.add(path, arcname=".")
    return buf.getvalue()


def _unpacked(key: str, name: str, is_dir: bool, ref: Any) -> Path:
    """The node-local copy of a shipped input, fetched from the object store
    (``ref``) and unpacked the first time this node needs it."""
    root = Path(tempfile.gettempdir()) / SHIPPED_DIR
    target = root / key / name
    if target.exists():
        return target
    data = import_ray().get(ref)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        if is_dir:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging / name, filter="data")
                else:  # Python < 3.11.4; the tar is ours
                    tar.extractall(staging / name)
        else:
            (staging / name).write_bytes(data)
        try:
            os.rename(staging, root / key)  # whole or absent: actors of this node may race here
        except OSError:  # another actor of this node unpacked it first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class RayWorker:
    """The body of a Ray actor (wrapped by ``ray.remote`` in :class:`RayPool`):
    a :class:`JobRunner` whose frame counts go to ``queue``."""

    def __init__(self, wid: int, plan: dict[str, Any], crash: str, queue: Any, cores: list[int] | None):
        pin(cores)
        self.runner, self.queue = JobRunner(wid, plan, crash), queue

    def run(self, job: BatchJob, attempt: int, shipped: dict[str, Shipped]) -> Event:
        """Render ``job``, its shipped inputs (input key -> :data:`Shipped`) from this node's copies."""
        if shipped:  # inputs from the object store instead of a shared file system
            job = dataclasses.replace(job, inputs={**job.inputs, **{k: _unpacked(*v) for k, v in shipped.items()}})
        return self.runner.run(job, attempt, self.queue.put_nowait)


def connect_ray(ray: Any, address: str) -> bool:
    """Join the cluster at ``address`` (``"local"``: start a Ray instance on
    this machine, with the cores this process may use).

    Returns
    -------
    bool
        True when this call started Ray (the caller shuts it down); an
        initialised Ray is used as it is.

    Raises
    ------
    ValueError
        The cluster cannot be reached (one line).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report usage to the internet
    local = {"num_cpus": cpu_cores()} if address == "local" else {}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING", **local)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {one_line(e)}") from None
    return True


class RayPool:
    """Workers as Ray actors; implements :class:`~synctalk_fast.batch.pools.Pool`.

    Owned by the parent, which owns the Ray connection too (``started``:
    shut it down at :meth:`close`).

    Parameters
    ----------
    ray : module
        Ray (:func:`import_ray`), connected.
    workers : int
        Slots.
    plan : dict
        Engine options of every worker (under each job's own).
    actor_options : dict
        Ray resources of each actor (``num_cpus``, ``num_gpus``).
    cores : list of (list of int or None)
        The cores each actor is pinned to (a local Ray only).
    crash : str
        The test hook (:data:`~synctalk_fast.batch.worker.TEST_CRASH_ENV`).
    started : bool
        Whether this run started Ray (then :meth:`close` shuts it down).
    """

    def __init__(
        self,
        ray: Any,
        workers: int,
        plan: dict[str, Any],
        actor_options: dict[str, Any],
        cores: list[list[int] | None],
        crash: str = "",
        started: bool = False,
    ):
        self.ray, self.plan, self.cores, self.crash, self.started = ray, plan, cores, crash, started
        self.queue = ray.util.queue.Queue(actor_options={"num_cpus": 0})
        self.cls = ray.remote(RayWorker).options(max_restarts=0, **actor_options)
        self.actors: list[Any] = [None] * workers
        self.calls: dict[int, Any] = {}  # worker slot -> its running call
        self.gone: list[tuple[int, str]] = []
        self.shipped: dict[Path, Shipped] = {}

    def ship(self, paths: set[Path]) -> None:
        """Put each input in the object store once (workers unpack it once a node)."""
        for path in sorted(paths):
            if path.exists() and path not in self.shipped:
                key = hashlib.sha256(json.dumps([file_digest(path), path.name]).encode()).hexdigest()[:24]
                self.shipped[path] = (key, path.name, path.is_dir(), self.ray.put(_pack(path)))

    def start(self, wid: int) -> None:
        self.kill(wid)
        self.actors[wid] = self.cls.remote(wid, self.plan, self.crash, self.queue, self.cores[wid])

    def send(self, wid: int, job: BatchJob, attempt: int) -> None:
        shipped = {k: self.shipped[p] for k, p in job.inputs.items() if p in self.shipped}
        self.calls[wid] = self.actors[wid].run.remote(job, attempt, shipped)

    def events(self, timeout: float) -> list[Event]:
        ray = self.ray
        by_ref = {ref: wid for wid, ref in self.calls.items()}
        ready: list[Any] = []
        if by_ref:
            ready, rest = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
            if ready and rest:
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        else:
            time.sleep(timeout)
        closing = []
        for ref in ready:
            wid = by_ref[ref]
            del self.calls[wid]
            try:
                closing.append(ray.get(ref))
            except ray.exceptions.RayError as e:  # the actor (its process or node) is gone
                self.gone.append((wid, one_line(e)))
        n = self.queue.qsize()  # after the calls: a finished job's frame counts are all queued
        return (self.queue.get_nowait_batch(n) if n else []) + closing

    def dead(self) -> list[tuple[int, str]]:
        gone, self.gone = self.gone, []
        return gone

    def kill(self, wid: int) -> None:
        if self.actors[wid] is not None:
            self.ray.kill(self.actors[wid], no_restart=True)
            self.actors[wid] = None
        self.calls.pop(wid, None)

    def forget(self, wid: int) -> None:
        self.kill(wid)

    def close(self) -> None:
        for wid in range(len(self.actors)):
            self.kill(wid)
        self.queue.shutdown()
        self.shipped.clear()
        if self.started:
            self.ray.shutdown()
