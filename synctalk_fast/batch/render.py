""":func:`render_batch`: many jobs from a manifest, on local worker processes or Ray actors.

It checks every job before any work (:mod:`.manifest`), skips those
already rendered from the same inputs and options (:mod:`.resume`), plans
the workers (how many, and how the cores are shared out among them), and
runs the rest on a pool (:mod:`.pools`, :mod:`.ray`) driven by the
:class:`~synctalk_fast.batch.schedule.Scheduler`.

Who owns what: the calling process owns the schedule, ``results.jsonl``,
the digest sidecars, the cleanup of a dead worker's partial output and,
with Ray, the connection to the cluster; it never loads a network. Each
worker owns its loaded pipelines and writes only the output of its job.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.system import cpu_cores
from ..engine.options import OPTION_NAMES, EngineOptions
from ..runtime import DEFAULT_RUNTIME, default_providers, get_runtime, is_accelerator
from .manifest import RESULTS_NAME, BatchJob, Jobs, read_jobs
from .pools import LocalPool, Pool
from .ray import RayPool, connect_ray, import_ray
from .resume import JobResult, already_done, job_digest, write_results
from .schedule import Group, Item, Scheduler
from .worker import TEST_CRASH_ENV

__all__ = ["render_batch", "BatchResult", "plan_workers", "ray_plan", "share_plan"]

#: Cores of a worker: the cores it is pinned to, one list a worker (None: not pinned).
Pins = list[list[int] | None]


@dataclass
class BatchResult:
    """What :func:`render_batch` did.

    Attributes
    ----------
    results : list of JobResult
        One a job, in manifest order.
    manifest : Path
        ``OUTPUT_DIR/results.jsonl``.
    seconds : float
        Wall time.
    workers : int
        Workers started.
    counts : dict of str to int
        Jobs ``done``, ``skipped`` and ``failed``.
    """

    results: list[JobResult]
    manifest: Path
    seconds: float
    workers: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """Frames rendered in this run (skipped jobs not counted)."""
        return sum(r.frames for r in self.results if r.status == "done")

    @property
    def exit_code(self) -> int:
        """0 when every job is done or skipped, 1 when any failed."""
        return 1 if self.counts.get("failed") else 0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "results": [dataclasses.asdict(r) for r in self.results],
            "counts": dict(self.counts),
            "manifest": str(self.manifest),
            "frames": self.frames,
            "seconds": self.seconds,
            "workers": self.workers,
            "exit_code": self.exit_code,
        }

    def __str__(self) -> str:
        c = self.counts
        return (
            f"{len(self.results)} jobs: {c.get('done', 0)} done, {c.get('skipped', 0)} skipped, "
            f"{c.get('failed', 0)} failed; {self.frames} frames in {self.seconds:.1f} s on {self.workers} "
            f"worker(s); {self.manifest}"
        )


# -- planning the cores ------------------------------------------------------------


def share_plan(cores: int) -> dict[str, int]:
    """Engine options filling ``cores``: sessions x threads = cores (sessions <= 4)."""
    sessions = max(1, min(cores, 4))
    return {"sessions": sessions, "threads": max(1, cores // sessions)}


def _pins(workers: int, share: int) -> Pins:
    """Disjoint shares of this process's cores, one a worker (None each when
    the cores do not go round)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return [None] * workers
    if workers <= len(allowed) <= cpu_cores():
        return [allowed[k * share : (k + 1) * share] for k in range(workers)]
    return [None] * workers


def plan_workers(n_groups: int, workers: int | None, runtime: str) -> tuple[int, dict[str, int], Pins]:
    """(workers, engine options each, the cores each is pinned to) on this machine.

    CPU: min(groups, cores) workers by default, each pinned to its share of
    the cores, with sessions x threads filling that share (total threads =
    cores). An accelerator: one worker unless asked (one device), the
    Engine's defaults. The engine options are a default under each job's.
    """
    cores = cpu_cores()
    try:
        accelerator = is_accelerator(default_providers(runtime=get_runtime(runtime)), runtime=runtime)
    except ValueError:  # "auto" or an unknown runtime: the worker's Engine decides (or says what is wrong)
        accelerator = False
    if workers is None:
        workers = 1 if accelerator else max(1, min(n_groups, cores))
    workers = max(1, int(workers))
    if accelerator:
        return workers, {}, [None] * workers
    share = max(1, cores // workers)
    return workers, share_plan(share), _pins(workers, share)


def ray_plan(
    ray: Any, n_groups: int, workers: int | None, num_cpus: float | None, num_gpus: float | None, local: bool
) -> tuple[int, dict[str, int], dict[str, Any], Pins]:
    """(workers, engine options each, actor options, the cores each is
    pinned to) for the cluster Ray reports. GPU actors when the cluster has
    GPUs (or ``num_gpus`` is given): one per GPU by default, the Engine's
    defaults. CPU actors: as :func:`plan_workers`, over the cluster's CPUs.

    Raises
    ------
    ValueError
        No node can hold one actor (it would wait forever).
    """
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    if num_gpus is None:
        num_gpus = 1.0 if gpus >= 1 else 0.0
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if (num_cpus or num_gpus) and not any(
        n.get("CPU", 0) >= (num_cpus or 0) and n.get("GPU", 0) >= num_gpus for n in nodes
    ):  # an actor no node can hold would wait forever
        largest: dict[str, Any] = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise ValueError(
            f"no node of the Ray cluster has {num_cpus or 0:g} CPUs and {num_gpus:g} GPUs for one "
            f"worker (the largest has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs)"
        )
    if num_gpus > 0:
        if workers is None:
            workers = max(1, int(gpus // num_gpus))
        return workers, {}, {"num_cpus": num_cpus or 1, "num_gpus": num_gpus}, [None] * workers
    if workers is None:
        workers = max(1, min(n_groups, int(cpus // (num_cpus or 1))))
    share = num_cpus or max(1, cpus // workers)
    pins: Pins = _pins(workers, int(share)) if local else [None] * workers
    return workers, share_plan(max(1, int(share))), {"num_cpus": share}, pins


# -- render_batch ----------------------------------------------------------------


def _check_arguments(
    workers: int | None,
    retries: int,
    ray_address: str | None,
    num_cpus: float | None,
    num_gpus: float | None,
    ship_inputs: bool,
) -> None:
    if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if isinstance(retries, bool) or int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    if ray_address is None and (num_cpus is not None or num_gpus is not None or ship_inputs):
        raise ValueError("num_cpus, num_gpus and ship_inputs are options of Ray workers: give ray_address")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (isinstance(value, bool) or not float(value) >= 0):
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def _overrides(options: EngineOptions | None, engine_options: dict[str, Any]) -> dict[str, Any]:
    """The engine options given to :func:`render_batch` (``options``' fields
    that differ from the defaults, and the keywords that are not None),
    converted and checked, as :meth:`EngineOptions.to_dict` writes them."""
    merged = EngineOptions.merge(options, engine_options, where="render_batch").to_dict()
    given = set(options.changed() if options is not None else ()) | {
        k for k, v in engine_options.items() if v is not None
    }
    return {k: merged[k] for k in OPTION_NAMES if k in given}


def _triage(jobs: list[BatchJob], results: dict[int, JobResult]) -> list[Item]:
    """The jobs to run (with their digests); those already done go in ``results`` as skipped."""
    todo: list[Item] = []
    for job in jobs:
        digest = job_digest(job)
        frames = already_done(job, digest)
        if frames is not None:
            results[job.line] = JobResult(job.line, "skipped", str(job.output), frames)
        else:
            try:
                job.sidecar.unlink()  # the output will be redone: its old record no longer holds
            except FileNotFoundError:
                pass
            todo.append((job, digest))
    return todo


def _local_pool(todo: list[Item], n_groups: int, workers: int | None, crash: str) -> tuple[Pool, int]:
    """Worker processes on this machine for ``todo``, and how many."""
    runtime = next((str(j.options["runtime"]) for j, _ in todo if "runtime" in j.options), DEFAULT_RUNTIME)
    n_workers, plan, pins = plan_workers(n_groups, workers, runtime)
    n_workers = min(n_workers, len(todo))
    return LocalPool(n_workers, plan, pins[:n_workers], crash), n_workers


def _ray_pool(
    ray: Any,
    todo: list[Item],
    n_groups: int,
    workers: int | None,
    crash: str,
    *,
    address: str,
    num_cpus: float | None,
    num_gpus: float | None,
    ship_inputs: bool,
) -> tuple[Pool, int]:
    """Ray actors for ``todo`` (connecting to the cluster first), and how many."""
    started = connect_ray(ray, address)
    try:
        n_workers, plan, actor_options, pins = ray_plan(
            ray, n_groups, workers, num_cpus, num_gpus, local=started and address == "local"
        )
        n_workers = min(n_workers, len(todo))
        pool = RayPool(ray, n_workers, plan, actor_options, pins[:n_workers], crash, started)
        if ship_inputs:
            pool.ship({p for j, _ in todo for p in j.inputs.values()})
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return pool, n_workers


def render_batch(
    jobs: Jobs,
    *,
    output_dir: str | os.PathLike[str],
    workers: int | None = None,
    retries: int = 2,
    progress: bool = True,
    base: str | os.PathLike[str] | None = None,
    ray_address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    ship_inputs: bool = False,
    options: EngineOptions | None = None,
    **engine_options: Any,
) -> BatchResult:
    """Render many jobs on local worker processes or Ray actors; resumable.

    Parameters
    ----------
    jobs : str, os.PathLike or sequence of dict
        A manifest (``.jsonl`` or ``.csv``, see :func:`read_jobs`) or the
        jobs. A job has ``audio`` (or ``features``), ``template``, ``unet``,
        ``audio_encoder`` (for ave from audio), ``output`` (a name under
        ``output_dir``: a video file or a frames folder), any engine option
        (the fields of :class:`~synctalk_fast.engine.EngineOptions`:
        ``runtime``, ``precision``, ``batch_size``, ...), ``mode``,
        ``overlap``, and any option of
        :func:`~synctalk_fast.pipeline.generate` by its API name (``start``,
        ``fps``, ``crf``, ``preset``, ``feather``, ...).
    output_dir : str or os.PathLike, keyword-only
        Created if missing; also holds ``results.jsonl``.
    workers : int, optional, keyword-only
        Worker processes (default on CPU: one per job group, at most one
        per core; on an accelerator: one). Jobs are grouped by (U-Net,
        template); a worker takes the next job of its group first, so it
        reuses what it loaded. On CPU each worker's engines share out its
        cores (sessions x threads), unless a job says otherwise.
    retries : int, keyword-only
        Reruns of a job whose worker process died (on a new worker). A job
        that fails with an error is not retried.
    progress : bool, keyword-only
        A jobs bar with frames and frames/s, on a terminal.
    base : str or os.PathLike, optional, keyword-only
        Relative input paths resolve against it (default: the manifest's
        folder, or the current directory).
    ray_address : str, optional, keyword-only
        Run the workers as Ray actors: ``"local"`` starts a Ray instance on
        this machine (shut down at the end), ``"auto"`` joins the cluster
        this machine belongs to, or a cluster's address (``"ray://..."``,
        ``"host:port"``). An already initialised Ray is used as it is. The
        inputs and ``output_dir`` must be at the same paths on every node
        (a shared file system), unless ``ship_inputs``.
    num_cpus, num_gpus : float, optional, keyword-only
        Ray resources of each actor (default: the cluster's CPUs shared out
        among the workers; one GPU per actor when the cluster has GPUs).
    ship_inputs : bool, keyword-only
        With Ray: put each input (template folder, networks, audio) in Ray's
        object store once, and let each node unpack it once, instead of
        reading it from a shared file system. ``output_dir`` is still
        written by the workers.
    options : EngineOptions, optional, keyword-only
        Engine options for every job: its fields that differ from the
        defaults beat the manifest's keys.
    **engine_options
        Engine options by field name (``batch_size=2``, ...), for every
        job; they beat ``options`` and the manifest's keys (None: not given).

    Returns
    -------
    BatchResult
        Each done job's :attr:`JobResult.engine` says what it ran with.

    Raises
    ------
    ValueError
        The manifest is malformed (all its problems, with line numbers), or
        an argument is out of range; nothing has run.
    TypeError
        An unknown keyword.

    Notes
    -----
    Resume: each finished output gets ``.<name>.job.json`` beside it with
    the digest of its inputs and options (the manifest's and those given
    here; :func:`~synctalk_fast.batch.resume.job_digest`); a job whose
    output is complete and whose digest matches is ``skipped``.
    ``results.jsonl`` is rewritten (atomically) as jobs finish and
    describes this run.
    """
    t0 = time.perf_counter()
    _check_arguments(workers, retries, ray_address, num_cpus, num_gpus, ship_inputs)
    overrides = _overrides(options, engine_options)
    checked = [
        dataclasses.replace(job, options={**job.options, **overrides})
        for job in read_jobs(jobs, output_dir=output_dir, base=base)
    ]
    ray = import_ray() if ray_address is not None else None
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / RESULTS_NAME
    results: dict[int, JobResult] = {}
    todo = _triage(checked, results)
    write_results(manifest, results)
    n_workers = 0
    if todo:
        groups: OrderedDict[Group, list[Item]] = OrderedDict()
        for item in todo:
            groups.setdefault(item[0].group, []).append(item)
        crash = os.environ.get(TEST_CRASH_ENV, "")
        if ray is None:
            pool, n_workers = _local_pool(todo, len(groups), workers, crash)
        else:
            assert ray_address is not None
            pool, n_workers = _ray_pool(
                ray,
                todo,
                len(groups),
                workers,
                crash,
                address=ray_address,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                ship_inputs=ship_inputs,
            )
        Scheduler(
            pool, groups, results, manifest, workers=n_workers, retries=retries, progress=progress, total=len(checked)
        ).run()
    ordered = [
        results.get(j.line) or JobResult(j.line, "failed", str(j.output), error="not run: no worker left")
        for j in checked
    ]
    counts = {s: sum(r.status == s for r in ordered) for s in ("done", "skipped", "failed")}
    return BatchResult(ordered, manifest, time.perf_counter() - t0, n_workers, counts)
