"""Batch rendering: many jobs from a manifest, over local worker processes
or Ray actors (issue 17).

:func:`render_batch` reads jobs (a ``.jsonl`` / ``.csv`` manifest, or a list
of dicts), checks them all before any work, skips those already rendered
with the same inputs, and renders the rest on workers that keep their
loaded networks and template caches between jobs.

Who owns what
-------------
- The parent process owns the schedule, ``OUTPUT_DIR/results.jsonl``, the
  digest sidecars (``.<name>.job.json`` beside each output), the cleanup
  of a dead worker's partial output and, with Ray, the connection to the
  cluster. It never loads a network.
- Each worker (a :class:`_JobRunner` in a local process or a Ray actor)
  owns its :class:`~synctalk_fast.pipeline.Pipeline`\\ s (an LRU) and
  writes only the output of the job it was handed; outputs are atomic
  (:func:`~synctalk_fast.pipeline.generate` writes a hidden
  ``.<name>.<hex>.part`` and renames it), so a job's output is complete or
  absent.

:func:`_schedule` drives a pool: :class:`_LocalPool` (processes on this
machine) or :class:`_RayPool` (actors on a Ray cluster), which have the
same methods and messages.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import re
import shutil
import tarfile
import tempfile
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ._util.atomic import write_atomic
from ._util.progress import progress_bar
from ._util.system import cpu_cores
from ._version import __version__
from .pipeline import Pipeline
from .runtime import DEFAULT_RUNTIME, default_providers, get_runtime, is_accelerator
from .sinks import VIDEO_SUFFIXES

__all__ = ["render_batch", "read_jobs", "BatchJob", "BatchResult", "JobResult", "RESULTS_NAME"]

#: The results manifest, in the output directory.
RESULTS_NAME = "results.jsonl"
#: Inputs that are files or folders (resolved against the manifest's folder).
PATH_KEYS = ("audio", "features", "template", "unet", "audio_encoder")
#: Options of :class:`Pipeline` (they decide which loaded pipeline a job uses).
PIPELINE_KEYS = ("mode", "runtime", "providers", "batch_size", "threads", "sessions", "precision", "overlap",
                 "cache_mb", "device_id")
#: Options of :meth:`Pipeline.generate`.
GENERATE_KEYS = ("start", "fps", "crf", "preset", "encoder", "feather", "image_format")
#: Every key a job may have.
JOB_KEYS = (*PATH_KEYS, "output", *PIPELINE_KEYS, *GENERATE_KEYS)
_INT_KEYS = {"batch_size", "threads", "sessions", "device_id", "start", "crf", "feather"}
_FLOAT_KEYS = {"fps", "cache_mb"}
_BOOL_KEYS = {"overlap"}
#: Loaded pipelines a worker keeps (least recently used dropped first).
PIPELINES_PER_WORKER = 2
#: TEST ONLY: ``"<output name>:<attempts>"`` makes a worker call ``os._exit``
#: midway through that job's frames on its first ``attempts`` attempts.
TEST_CRASH_ENV = "SYNCTALK_FAST_BATCH_TEST_CRASH"
_CRASH_EXIT = 86


@dataclass
class BatchJob:
    """One job, checked: absolute paths, and the options by API name."""

    line: int  # line number in the manifest (1-based; the index + 1 for a list)
    name: str  # the output as given, relative to the output directory
    output: Path  # absolute
    inputs: dict[str, Path]  # PATH_KEYS present -> absolute path
    options: dict[str, Any]  # PIPELINE_KEYS and GENERATE_KEYS given

    @property
    def group(self) -> tuple[str, str]:
        """Jobs of one group share a loaded U-Net and a template cache."""
        return (str(self.inputs.get("unet", "")), str(self.inputs.get("template", "")))

    @property
    def sidecar(self) -> Path:
        """The digest record beside the output: ``.<name>.job.json``."""
        return self.output.parent / f".{self.output.name}.job.json"


@dataclass
class JobResult:
    """How one job ended in this run (a line of ``results.jsonl``)."""

    job: int  # manifest line
    status: str  # "done", "skipped" or "failed"
    output: str
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    attempts: int = 0  # worker runs (0 for a skipped job)


@dataclass
class BatchResult:
    """What :func:`render_batch` did."""

    results: list[JobResult]  # in manifest order
    manifest: Path  # OUTPUT_DIR/results.jsonl
    seconds: float  # wall time
    workers: int
    counts: dict[str, int] = field(default_factory=dict)  # done / skipped / failed

    @property
    def frames(self) -> int:
        """Frames rendered in this run (skipped jobs not counted)."""
        return sum(r.frames for r in self.results if r.status == "done")

    @property
    def exit_code(self) -> int:
        """0 when every job is done or skipped, 1 when any failed."""
        return 1 if self.counts.get("failed") else 0

    def to_dict(self) -> dict:
        return {"results": [dataclasses.asdict(r) for r in self.results], "counts": dict(self.counts),
                "manifest": str(self.manifest), "frames": self.frames, "seconds": self.seconds,
                "workers": self.workers, "exit_code": self.exit_code}

    def __str__(self) -> str:
        c = self.counts
        return (f"{len(self.results)} jobs: {c.get('done', 0)} done, {c.get('skipped', 0)} skipped, "
                f"{c.get('failed', 0)} failed; {self.frames} frames in {self.seconds:.1f} s on {self.workers} "
                f"worker(s); {self.manifest}")


# -- manifest -------------------------------------------------------------

def _coerce(key: str, value: Any) -> Any:
    """A CSV cell (a string) as the type the option takes."""
    if not isinstance(value, str):
        return value
    if key in _INT_KEYS:
        return int(value)
    if key in _FLOAT_KEYS:
        return float(value)
    if key in _BOOL_KEYS:
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if key == "providers":
        return [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
    return value


def _rows(jobs: str | os.PathLike | Sequence[dict]) -> tuple[list[tuple[int, Any]], list[str]]:
    """(line, dict or error) pairs of the manifest, and manifest-wide problems."""
    if not isinstance(jobs, (str, os.PathLike)):
        return [(k + 1, job) for k, job in enumerate(jobs)], []
    path = Path(jobs)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"{path}: cannot read the manifest: {e}"]
    rows: list[tuple[int, Any]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            if None in row:
                rows.append((reader.line_num, "more cells than the header has columns"))
                continue
            rows.append((reader.line_num, {k.strip(): v.strip() for k, v in row.items()
                                           if k is not None and v is not None and v.strip() != ""}))
        return rows, []
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
        return [], [f"{path}: a manifest is a .jsonl or .csv file"]
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            rows.append((n, f"bad JSON: {e.msg} (column {e.colno})"))
    return rows, []


def read_jobs(jobs: str | os.PathLike | Sequence[dict], *, output_dir: str | os.PathLike,
              base: str | os.PathLike | None = None) -> list[BatchJob]:
    """Check a manifest and resolve its jobs.

    Parameters
    ----------
    jobs : str, os.PathLike or sequence of dict
        A ``.jsonl`` file (one JSON object a line; blank lines and lines
        starting with ``#`` are skipped), a ``.csv`` file (a header row of
        keys; empty cells are left out), or the dicts themselves.
    output_dir : str or os.PathLike
        Where the outputs go; a job's ``output`` is a name under it.
    base : str or os.PathLike, optional
        Relative input paths resolve against it (default: the manifest's
        folder, or the current directory for a list).

    Returns
    -------
    list of BatchJob

    Raises
    ------
    ValueError
        Every problem found, one a line, each with its manifest line:
        bad JSON, an unknown key, a missing field, a bad value, an output
        outside the output directory, two jobs with one output.
    """
    out = Path(output_dir).resolve()
    if base is None:
        base = Path(jobs).parent if isinstance(jobs, (str, os.PathLike)) else Path.cwd()
    root = Path(base).resolve()
    where = f"{jobs}" if isinstance(jobs, (str, os.PathLike)) else "jobs"
    rows, problems = _rows(jobs)
    found: list[BatchJob] = []
    seen: dict[Path, int] = {}
    for line, row in rows:
        bad: list[str] = []
        if isinstance(row, str):
            problems.append(f"{where}:{line}: {row}")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}:{line}: a job is a JSON object, not {type(row).__name__}")
            continue
        unknown = sorted(set(row) - set(JOB_KEYS))
        if unknown:
            bad.append(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
        missing = [k for k in ("template", "unet", "output") if not row.get(k)]
        if not row.get("audio") and not row.get("features"):
            missing.insert(0, "audio (or features)")
        if missing:
            bad.append(f"missing {', '.join(missing)}")
        options: dict[str, Any] = {}
        for key in (*PIPELINE_KEYS, *GENERATE_KEYS):
            if key in row:
                try:
                    options[key] = _coerce(key, row[key])
                except ValueError:
                    bad.append(f"{key}: bad value {row[key]!r}")
        inputs = {k: (root / os.path.expanduser(str(row[k]))).resolve() for k in PATH_KEYS if row.get(k)}
        output = None
        name = str(row.get("output") or "")
        if name:
            output = (out / name).resolve()
            if Path(name).is_absolute() or out not in output.parents:
                bad.append(f"output {name!r} is not inside the output directory")
            elif output == out / RESULTS_NAME:
                bad.append(f"output {name!r} is the results manifest")
            elif output.suffix and output.suffix.lower() not in VIDEO_SUFFIXES:
                bad.append(f"output {name!r}: use a video ({', '.join(VIDEO_SUFFIXES)}) or a folder name")
            elif output in seen:
                bad.append(f"output {name!r} is also the output of line {seen[output]}")
            else:
                seen[output] = line
        if bad:
            problems.append(f"{where}:{line}: {'; '.join(bad)}")
            continue
        assert output is not None
        found.append(BatchJob(line, name, output, inputs, options))
    if not problems and not found:
        problems.append(f"{where}: no jobs")
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in the manifest:\n" + "\n".join(problems))
    return found


# -- digests and resume ---------------------------------------------------

_file_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256; parent process only


def _file_digest(path: Path) -> Any:
    """sha256 of a file (cached by size and mtime), a listing of a folder, or "missing"."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if path.is_dir():  # a template: names, sizes and mtimes of its files
        entries = []
        for p in sorted(path.rglob("*")):
            if p.is_file():
                s = p.stat()
                entries.append(f"{p.relative_to(path).as_posix()}:{s.st_size}:{s.st_mtime_ns}")
        return hashlib.sha256("\n".join(entries).encode()).hexdigest()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _file_digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _file_digests[key] = h.hexdigest()
    return _file_digests[key]


def job_digest(job: BatchJob) -> str:
    """sha256 of what decides a job's output: its inputs' contents (a
    template by its files' names, sizes and mtimes), its options and the
    package version."""
    record = {"version": __version__, "options": job.options,
              "inputs": {k: _file_digest(p) for k, p in sorted(job.inputs.items())}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _output_size(path: Path) -> int | None:
    """A video's size in bytes, a frames folder's ``frame_*`` count, None when absent."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.name.startswith("frame_"))
    return None


def _already_done(job: BatchJob, digest: str) -> int | None:
    """The frames of a complete output made from the same inputs, else None."""
    try:
        record = json.loads(job.sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("digest") != digest:
        return None
    size = _output_size(job.output)
    if size is None or size != record.get("size"):
        return None
    return int(record.get("frames", 0))


def _discard_parts(output: Path) -> None:
    """Delete a dead worker's partial output: ``.<name>.<8 hex>.part`` beside ``output``."""
    pattern = re.compile(rf"\.{re.escape(output.name)}\.[0-9a-f]{{8}}\.part")
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return
    for p in entries:
        if pattern.fullmatch(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    p.unlink()
                except OSError:
                    pass


# -- worker process -------------------------------------------------------

class _Ticker:
    """A sink that reports frames through ``send`` (every ``every`` frames),
    and the test-only crash hook (:data:`TEST_CRASH_ENV`)."""

    def __init__(self, send, wid: int, job: int, crash_at: int | None, every: int = 8):
        self.send, self.wid, self.job, self.crash_at, self.every = send, wid, job, crash_at, every
        self.count = self.sent = 0

    def write(self, frame, audio=None) -> None:
        self.count += 1
        if self.crash_at is not None and self.count >= self.crash_at:
            os._exit(_CRASH_EXIT)  # TEST ONLY: die mid-job, with a partial output on disk
        if self.count - self.sent >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.count > self.sent:
            self.send(("frames", self.wid, self.job, self.count - self.sent))
            self.sent = self.count

    close = flush

    def abort(self) -> None:
        pass


def _crash_at(job: BatchJob, attempt: int, crash: str) -> int | None:
    """The frame at which the test hook ``crash`` (:data:`TEST_CRASH_ENV`) kills this attempt, if any."""
    name, _, attempts = crash.rpartition(":")
    if name and name == job.name and attempts.isdigit() and attempt <= int(attempts):
        return 3
    return None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _pin(cores: list[int] | None) -> None:
    """Run this process on ``cores``: its defaults (threads, encoder) follow them."""
    if cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cores)
        except OSError:
            pass


class _JobRunner:
    """A worker's state, the same in a local process and in a Ray actor: an
    LRU of :class:`Pipeline` (keyed by networks and pipeline options; each
    keeps its last template's decoded frames). Runs one job at a time and
    writes only that job's output."""

    def __init__(self, wid: int, plan: dict, crash: str = ""):
        self.wid, self.plan, self.crash = wid, plan, crash
        self.pipelines: OrderedDict[tuple, Pipeline] = OrderedDict()

    def _pipeline(self, job: BatchJob) -> Pipeline:
        popts = {**self.plan, **{k: v for k, v in job.options.items() if k in PIPELINE_KEYS}}
        key = (str(job.inputs["unet"]), str(job.inputs.get("audio_encoder")),
               json.dumps(popts, sort_keys=True, default=str))
        pipe = self.pipelines.pop(key, None)
        if pipe is None:
            while len(self.pipelines) >= PIPELINES_PER_WORKER:
                self.pipelines.popitem(last=False)
            pipe = Pipeline(job.inputs["unet"], job.inputs.get("audio_encoder"), **popts)
        self.pipelines[key] = pipe
        return pipe

    def run(self, job: BatchJob, attempt: int, send) -> tuple:
        """Render ``job``; ``send`` takes the frame-count messages. Returns
        the closing message, ``("done" | "failed", wid, line, data)``."""
        t0 = time.perf_counter()
        try:
            pipe = self._pipeline(job)
            ticker = _Ticker(send, self.wid, job.line, _crash_at(job, attempt, self.crash))
            gopts = {k: v for k, v in job.options.items() if k in GENERATE_KEYS}
            result = pipe.generate(job.inputs.get("audio"), features=job.inputs.get("features"),
                                   template=job.inputs["template"], output=[job.output, ticker], progress=False,
                                   **gopts)
            return ("done", self.wid, job.line, {"frames": result.frames, "seconds": time.perf_counter() - t0})
        except Exception as e:  # the job fails, the worker goes on
            return ("failed", self.wid, job.line, {"error": _one_line(e), "seconds": time.perf_counter() - t0,
                                                   "trace": traceback.format_exc()})


def _worker(wid: int, conn, cores: list[int] | None, plan: dict, crash: str) -> None:
    """Local worker process main: render the jobs ``conn`` brings until None."""
    _pin(cores)
    runner = _JobRunner(wid, plan, crash)
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if msg is None:
            return
        job, attempt = msg
        conn.send(runner.run(job, attempt, conn.send))


class _LocalPool:
    """Worker processes on this machine (spawn context), each with its own
    duplex pipe (jobs in, events out: a worker dying mid-send can only
    break its own pipe). Owned by the parent.

    The interface :func:`_schedule` drives, which :class:`_RayPool` shares:
    ``start(wid)`` (a fresh worker in slot ``wid``), ``send(wid, job,
    attempt)``, ``events(timeout)`` (messages ``(kind, wid, job line,
    data)``), ``dead()`` (slots whose worker is gone, with why), ``kill(wid)``,
    ``forget(wid)`` (empty a dead slot) and ``close()``.
    """

    def __init__(self, workers: int, plan: dict, cores: list[list[int] | None], crash: str = ""):
        self.ctx = mp.get_context("spawn")
        self.plan, self.cores, self.crash = plan, cores, crash
        self.procs: list[Any] = [None] * workers
        self.conns: list[Any] = [None] * workers

    def start(self, wid: int) -> None:
        if self.conns[wid] is not None:
            self.conns[wid].close()
        mine, theirs = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(target=_worker, args=(wid, theirs, self.cores[wid], self.plan, self.crash),
                             name=f"synctalk-batch-{wid}", daemon=True)
        p.start()
        theirs.close()
        self.procs[wid], self.conns[wid] = p, mine

    def send(self, wid: int, job: BatchJob, attempt: int) -> None:
        try:
            self.conns[wid].send((job, attempt))
        except OSError:  # the worker is gone: dead() reports it
            pass

    def events(self, timeout: float) -> list[tuple]:
        conns = [c for c in self.conns if c is not None]
        sentinels = [p.sentinel for p in self.procs if p is not None]
        got = []
        for c in mp_connection.wait(conns + sentinels, timeout):
            if c in conns:
                try:
                    while c.poll():
                        got.append(c.recv())
                except (EOFError, OSError):
                    pass
        return got

    def dead(self) -> list[tuple[int, str]]:
        return [(wid, f"exit code {p.exitcode}") for wid, p in enumerate(self.procs)
                if p is not None and not p.is_alive()]

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


# -- Ray ------------------------------------------------------------------

#: Where a Ray worker unpacks shipped inputs: node-local, shared by the
#: actors of a node, one folder per input content.
SHIPPED_DIR = "synctalk_fast_inputs"


def _import_ray():
    """Ray, imported on first use: optional (the ``[ray]`` extra), and slow to import."""
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
    data = _import_ray().get(ref)
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


class _RayWorker:
    """The body of a Ray actor (wrapped by ``ray.remote`` in :class:`_RayPool`):
    a :class:`_JobRunner`; frame counts go to the parent through a Ray queue,
    a job's closing message is the result of its ``run`` call."""

    def __init__(self, wid: int, plan: dict, crash: str, queue: Any, cores: list[int] | None):
        _pin(cores)
        self.runner, self.queue = _JobRunner(wid, plan, crash), queue

    def run(self, job: BatchJob, attempt: int, shipped: dict[str, tuple]) -> tuple:
        if shipped:  # inputs from the object store instead of a shared file system
            job = dataclasses.replace(job, inputs={**job.inputs, **{k: _unpacked(*v) for k, v in shipped.items()}})
        return self.runner.run(job, attempt, self.queue.put_nowait)


def _connect_ray(ray: Any, address: str) -> bool:
    """Join the cluster at ``address`` ("local": start a Ray instance on
    this machine, with the cores this process may use). True when this call
    started Ray (the caller shuts it down); an initialised Ray is used as is."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report usage to the internet
    local = {"num_cpus": cpu_cores()} if address == "local" else {}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING", **local)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {_one_line(e)}") from None
    return True


def _ray_plan(ray: Any, n_groups: int, workers: int | None, num_cpus: float | None, num_gpus: float | None,
              local: bool) -> tuple[int, dict, dict, list[list[int] | None]]:
    """(workers, pipeline options each, actor options, the cores each is
    pinned to) for the cluster Ray reports. GPU actors when the cluster has
    GPUs (or ``num_gpus`` is given): one per GPU by default, the Engine's
    defaults. CPU actors: as :func:`_plan`, over the cluster's CPUs."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    if num_gpus is None:
        num_gpus = 1.0 if gpus >= 1 else 0.0
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if (num_cpus or num_gpus) and not any(n.get("CPU", 0) >= (num_cpus or 0) and n.get("GPU", 0) >= num_gpus
                                          for n in nodes):  # an actor no node can hold would wait forever
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        raise ValueError(f"no node of the Ray cluster has {num_cpus or 0:g} CPUs and {num_gpus:g} GPUs for one "
                         f"worker (the largest has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs)")
    if num_gpus > 0:
        if workers is None:
            workers = max(1, int(gpus // num_gpus))
        return workers, {}, {"num_cpus": num_cpus or 1, "num_gpus": num_gpus}, [None] * workers
    if workers is None:
        workers = max(1, min(n_groups, int(cpus // (num_cpus or 1))))
    share = num_cpus or max(1, cpus // workers)
    pins = _pins(workers, int(share)) if local else [None] * workers
    return workers, _share_plan(max(1, int(share))), {"num_cpus": share}, pins


class _RayPool:
    """Workers as Ray actors, with :class:`_LocalPool`'s interface. Owned by
    the parent, which owns the Ray connection too (``started``: shut it
    down at close). Inputs are read from their paths (a file system shared
    with the cluster), or, after :meth:`ship`, from the object store."""

    def __init__(self, ray: Any, workers: int, plan: dict, actor_options: dict, cores: list[list[int] | None],
                 crash: str = "", started: bool = False):
        self.ray, self.plan, self.cores, self.crash, self.started = ray, plan, cores, crash, started
        self.queue = ray.util.queue.Queue(actor_options={"num_cpus": 0})
        self.cls = ray.remote(_RayWorker).options(max_restarts=0, **actor_options)
        self.actors: list[Any] = [None] * workers
        self.calls: dict[int, Any] = {}  # worker slot -> its running call
        self.gone: list[tuple[int, str]] = []
        self.shipped: dict[Path, tuple] = {}

    def ship(self, paths: set[Path]) -> None:
        """Put each input in the object store once (workers unpack it once a node)."""
        for path in sorted(paths):
            if path.exists() and path not in self.shipped:
                key = hashlib.sha256(json.dumps([_file_digest(path), path.name]).encode()).hexdigest()[:24]
                self.shipped[path] = (key, path.name, path.is_dir(), self.ray.put(_pack(path)))

    def start(self, wid: int) -> None:
        self.kill(wid)
        self.actors[wid] = self.cls.remote(wid, self.plan, self.crash, self.queue, self.cores[wid])

    def send(self, wid: int, job: BatchJob, attempt: int) -> None:
        shipped = {k: self.shipped[p] for k, p in job.inputs.items() if p in self.shipped}
        self.calls[wid] = self.actors[wid].run.remote(job, attempt, shipped)

    def events(self, timeout: float) -> list[tuple]:
        ray = self.ray
        by_ref = {ref: wid for wid, ref in self.calls.items()}
        ready: list = []
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
                self.gone.append((wid, _one_line(e)))
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


# -- scheduling -----------------------------------------------------------

def _share_plan(cores: int) -> dict:
    """Pipeline options filling ``cores``: sessions x threads = cores (sessions <= 4)."""
    sessions = max(1, min(cores, 4))
    return {"sessions": sessions, "threads": max(1, cores // sessions)}


def _pins(workers: int, share: int) -> list[list[int] | None]:
    """Disjoint shares of this process's cores, one a worker (None each when
    the cores do not go round)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return [None] * workers
    if workers <= len(allowed) <= cpu_cores():
        return [allowed[k * share : (k + 1) * share] for k in range(workers)]
    return [None] * workers


def _plan(n_groups: int, workers: int | None, runtime: str) -> tuple[int, dict, list[list[int] | None]]:
    """(workers, pipeline options each, the cores each is pinned to).

    CPU: min(groups, cores) workers by default, each pinned to its share of
    the cores, with sessions x threads filling that share (total threads =
    cores). An accelerator: one worker unless asked (one device), the
    Engine's defaults.
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
    plan = _share_plan(share)
    pins = _pins(workers, share)
    return workers, plan, pins


def _write_results(path: Path, results: dict[int, JobResult]) -> None:
    lines = [json.dumps({k: v for k, v in dataclasses.asdict(r).items()}) for _, r in sorted(results.items())]
    write_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode())


def render_batch(
    jobs: str | os.PathLike | Sequence[dict],
    *,
    output_dir: str | os.PathLike,
    workers: int | None = None,
    retries: int = 2,
    progress: bool = True,
    base: str | os.PathLike | None = None,
    ray_address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    ship_inputs: bool = False,
) -> BatchResult:
    """Render many jobs on local worker processes or Ray actors; resumable.

    Parameters
    ----------
    jobs : str, os.PathLike or sequence of dict
        A manifest (``.jsonl`` or ``.csv``, see :func:`read_jobs`) or the
        jobs. A job has ``audio`` (or ``features``), ``template``, ``unet``,
        ``audio_encoder`` (for ave from audio), ``output`` (a name under
        ``output_dir``: a video file or a frames folder) and any option of
        :func:`~synctalk_fast.pipeline.generate` by its API name (``start``,
        ``fps``, ``crf``, ``preset``, ``feather``, ``precision``,
        ``runtime``, ...).
    output_dir : str or os.PathLike, keyword-only
        Created if missing; also holds ``results.jsonl``.
    workers : int, optional, keyword-only
        Worker processes (default on CPU: one per job group, at most one
        per core; on an accelerator: one). Jobs are grouped by (U-Net,
        template); a worker takes the next job of its group first, so it
        reuses what it loaded.
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

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        The manifest is malformed (all its problems, with line numbers);
        nothing has run.

    Notes
    -----
    Resume: each finished output gets ``.<name>.job.json`` beside it with
    the digest of its inputs and options (:func:`job_digest`); a job whose
    output is complete and whose digest matches is ``skipped``.
    ``results.jsonl`` is rewritten (atomically) as jobs finish and
    describes this run.
    """
    t0 = time.perf_counter()
    if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if isinstance(retries, bool) or int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    if ray_address is None and (num_cpus is not None or num_gpus is not None or ship_inputs):
        raise ValueError("num_cpus, num_gpus and ship_inputs are options of Ray workers: give ray_address")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (isinstance(value, bool) or not float(value) >= 0):
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    checked = read_jobs(jobs, output_dir=output_dir, base=base)
    ray = _import_ray() if ray_address is not None else None
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / RESULTS_NAME
    results: dict[int, JobResult] = {}
    todo: list[tuple[BatchJob, str]] = []
    for job in checked:
        digest = job_digest(job)
        frames = _already_done(job, digest)
        if frames is not None:
            results[job.line] = JobResult(job.line, "skipped", str(job.output), frames)
        else:
            try:
                job.sidecar.unlink()  # the output will be redone: its old record no longer holds
            except FileNotFoundError:
                pass
            todo.append((job, digest))
    _write_results(manifest, results)
    n_workers = 0
    if todo:
        groups: OrderedDict[tuple[str, str], list[tuple[BatchJob, str]]] = OrderedDict()
        for item in todo:
            groups.setdefault(item[0].group, []).append(item)
        crash = os.environ.get(TEST_CRASH_ENV, "")
        pool: _LocalPool | _RayPool
        if ray is None:
            runtime = next((str(j.options["runtime"]) for j, _ in todo if "runtime" in j.options), DEFAULT_RUNTIME)
            n_workers, plan, pins = _plan(len(groups), workers, runtime)
            n_workers = min(n_workers, len(todo))
            pool = _LocalPool(n_workers, plan, pins[:n_workers], crash)
        else:
            started = _connect_ray(ray, ray_address)
            try:
                n_workers, plan, actor_options, pins = _ray_plan(ray, len(groups), workers, num_cpus, num_gpus,
                                                                 local=started and ray_address == "local")
                n_workers = min(n_workers, len(todo))
                pool = _RayPool(ray, n_workers, plan, actor_options, pins[:n_workers], crash, started)
                if ship_inputs:
                    pool.ship({p for j, _ in todo for p in j.inputs.values()})
            except BaseException:
                if started:
                    ray.shutdown()
                raise
        _schedule(pool, groups, results, manifest, n_workers=n_workers, retries=retries, progress=progress,
                  total=len(checked))
    ordered = [results.get(j.line) or JobResult(j.line, "failed", str(j.output), error="not run: no worker left")
               for j in checked]
    counts = {s: sum(r.status == s for r in ordered) for s in ("done", "skipped", "failed")}
    return BatchResult(ordered, manifest, time.perf_counter() - t0, n_workers, counts)


def _schedule(pool: _LocalPool | _RayPool, groups: OrderedDict, results: dict[int, JobResult], manifest: Path, *,
              n_workers: int, retries: int, progress: bool, total: int) -> None:
    """Hand out the jobs of ``groups`` (lists, by group) to the pool's
    workers, one at a time, a worker's own group first; record results as
    they come. Runs in the parent; the only writer of ``results``,
    sidecars and ``manifest``."""
    pending: OrderedDict = OrderedDict((g, list(items)) for g, items in groups.items())
    attempts: dict[int, int] = {}
    running: dict[int, tuple[BatchJob, str]] = {}  # worker slot -> its job
    last_group: dict[int, tuple] = {}
    idle: list[int] = []
    bar = progress_bar(total, "jobs", progress, unit="job")
    if bar is not None:
        bar.update(len(results))
    frames = 0
    t_start = time.perf_counter()

    def next_for(wid: int) -> tuple[BatchJob, str] | None:
        g = last_group.get(wid)
        if g in pending and pending[g]:
            item = pending[g].pop(0)
        else:  # a group nobody works on, else share the largest one
            busy = {last_group.get(w) for w in running}
            free = [k for k, v in pending.items() if v and k not in busy]
            rest = [k for k, v in pending.items() if v]
            if not rest:
                return None
            g = free[0] if free else max(rest, key=lambda k: len(pending[k]))
            item = pending[g].pop(0)
        last_group[wid] = g
        return item

    def finish(line: int, result: JobResult) -> None:
        results[line] = result
        _write_results(manifest, results)
        if bar is not None:
            bar.update(1)

    def dispatch(wid: int) -> None:
        item = next_for(wid)
        if item is None:
            idle.append(wid)
            return
        job = item[0]
        attempts[job.line] = attempts.get(job.line, 0) + 1
        running[wid] = item
        pool.send(wid, job, attempts[job.line])

    try:
        for wid in range(n_workers):
            pool.start(wid)
            dispatch(wid)
        while running:
            for kind, wid, line, data in pool.events(0.2):
                if wid not in running or running[wid][0].line != line:
                    continue  # a message of a job already written off
                job, digest = running[wid]
                if kind == "frames":
                    frames += data
                    if bar is not None:
                        rate = frames / max(time.perf_counter() - t_start, 1e-9)
                        bar.set_postfix_str(f"{frames} frames, {rate:.1f} frames/s")
                elif kind == "done":
                    size = _output_size(job.output)
                    write_atomic(job.sidecar, json.dumps({"digest": digest, "frames": data["frames"],
                                                          "size": size, "job": job.line}).encode())
                    del running[wid]
                    finish(line, JobResult(line, "done", str(job.output), data["frames"], round(data["seconds"], 3),
                                           None, attempts[line]))
                    dispatch(wid)
                elif kind == "failed":
                    del running[wid]
                    finish(line, JobResult(line, "failed", str(job.output), 0, round(data["seconds"], 3),
                                           data["error"], attempts[line]))
                    dispatch(wid)
            for wid, why in pool.dead():
                if wid not in running:  # died idle: leave the slot empty
                    pool.forget(wid)
                    if wid in idle:
                        idle.remove(wid)
                    continue
                job, digest = running.pop(wid)
                _discard_parts(job.output)  # the dead worker's partial output
                if attempts[job.line] <= retries:
                    pending.setdefault(job.group, []).insert(0, (job, digest))
                    pending.move_to_end(job.group, last=False)
                else:
                    finish(job.line, JobResult(job.line, "failed", str(job.output), 0, 0.0,
                                               f"worker process died ({why}) on each of "
                                               f"{attempts[job.line]} attempts", attempts[job.line]))
                pool.start(wid)  # a fresh worker in the slot
                last_group.pop(wid, None)
                dispatch(wid)
                while idle and any(pending.values()):  # a retried job may wait for an idle worker
                    dispatch(idle.pop())
    finally:
        for wid, (job, _) in running.items():  # interrupted: no partial output may stay
            pool.kill(wid)
            _discard_parts(job.output)
        pool.close()
        if bar is not None:
            bar.close()
