"""Batch rendering: many jobs from a manifest, over local worker processes (issue 17).

:func:`render_batch` reads jobs (a ``.jsonl`` / ``.csv`` manifest, or a list
of dicts), checks them all before any work, skips those already rendered
with the same inputs, and renders the rest on worker processes that keep
their loaded networks and template caches between jobs.

Who owns what
-------------
- The parent process owns the schedule, ``OUTPUT_DIR/results.jsonl``, the
  digest sidecars (``.<name>.job.json`` beside each output) and the cleanup
  of a dead worker's partial output. It never loads a network.
- Each worker process owns its :class:`~synctalk_fast.pipeline.Pipeline`\\ s
  (an LRU) and writes only the output of the job it was handed; outputs are
  atomic (:func:`~synctalk_fast.pipeline.generate` writes a hidden
  ``.<name>.<hex>.part`` and renames it), so a job's output is complete or
  absent.

The local pool is :class:`_LocalPool`; a distributed backend (Ray) is a
class with the same three methods (``start``, ``send``, ``events``) and
the same messages, handed to :func:`_schedule` instead.
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
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ._atomic import write_atomic
from ._progress import progress_bar
from ._system import cpu_cores
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
    """A sink that reports frames to the parent (every ``every`` frames), and
    the test-only crash hook (:data:`TEST_CRASH_ENV`)."""

    def __init__(self, events, wid: int, job: int, crash_at: int | None, every: int = 8):
        self.events, self.wid, self.job, self.crash_at, self.every = events, wid, job, crash_at, every
        self.count = self.sent = 0

    def write(self, frame, audio=None) -> None:
        self.count += 1
        if self.crash_at is not None and self.count >= self.crash_at:
            os._exit(_CRASH_EXIT)  # TEST ONLY: die mid-job, with a partial output on disk
        if self.count - self.sent >= self.every:
            self.events.send(("frames", self.wid, self.job, self.count - self.sent))
            self.sent = self.count

    def close(self) -> None:
        if self.count > self.sent:
            self.events.send(("frames", self.wid, self.job, self.count - self.sent))
            self.sent = self.count

    def abort(self) -> None:
        pass


def _crash_at(job: BatchJob, attempt: int) -> int | None:
    spec = os.environ.get(TEST_CRASH_ENV, "")
    name, _, attempts = spec.rpartition(":")
    if name and name == job.name and attempts.isdigit() and attempt <= int(attempts):
        return 3
    return None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _worker(wid: int, inbox, events, cores: list[int] | None, plan: dict) -> None:
    """Worker process main: render the jobs sent to ``inbox`` until None.

    Owns an LRU of :class:`Pipeline` (keyed by networks and pipeline
    options; each keeps its last template's decoded frames) and writes only
    the output of the job in hand.
    """
    if cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cores)  # this worker's share: defaults (threads, encoder) follow it
        except OSError:
            pass
    pipelines: OrderedDict[tuple, Pipeline] = OrderedDict()
    while True:
        try:
            msg = inbox.recv()
        except EOFError:  # the parent is gone
            return
        if msg is None:
            return
        job, attempt = msg
        t0 = time.perf_counter()
        events.send(("started", wid, job.line, 0))
        try:
            popts = {**plan, **{k: v for k, v in job.options.items() if k in PIPELINE_KEYS}}
            key = (str(job.inputs["unet"]), str(job.inputs.get("audio_encoder")),
                   json.dumps(popts, sort_keys=True, default=str))
            pipe = pipelines.pop(key, None)
            if pipe is None:
                while len(pipelines) >= PIPELINES_PER_WORKER:
                    pipelines.popitem(last=False)
                pipe = Pipeline(job.inputs["unet"], job.inputs.get("audio_encoder"), **popts)
            pipelines[key] = pipe
            ticker = _Ticker(events, wid, job.line, _crash_at(job, attempt))
            gopts = {k: v for k, v in job.options.items() if k in GENERATE_KEYS}
            result = pipe.generate(job.inputs.get("audio"), features=job.inputs.get("features"),
                                   template=job.inputs["template"], output=[job.output, ticker], progress=False,
                                   **gopts)
            events.send(("done", wid, job.line, {"frames": result.frames, "seconds": time.perf_counter() - t0}))
        except Exception as e:  # the job fails, the worker goes on
            events.send(("failed", wid, job.line, {"error": _one_line(e), "seconds": time.perf_counter() - t0,
                                                  "trace": traceback.format_exc()}))


class _LocalPool:
    """Worker processes on this machine (spawn context), each with its own
    duplex pipe (jobs in, events out: a worker dying mid-send can only
    break its own pipe). Owned by the parent.

    The interface a distributed backend (Ray) reproduces: ``start(wid)`` (a
    fresh worker in slot ``wid``), ``send(wid, job, attempt)``,
    ``events(timeout)`` (messages ``(kind, wid, job line, data)``),
    ``dead()`` (slots whose worker is gone, with the exit code) and
    ``close()``.
    """

    def __init__(self, workers: int, plan: dict, cores: list[list[int] | None]):
        self.ctx = mp.get_context("spawn")
        self.plan, self.cores = plan, cores
        self.procs: list[Any] = [None] * workers
        self.conns: list[Any] = [None] * workers

    def start(self, wid: int) -> None:
        if self.conns[wid] is not None:
            self.conns[wid].close()
        mine, theirs = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(target=_worker, args=(wid, theirs, theirs, self.cores[wid], self.plan),
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

    def dead(self) -> list[tuple[int, int | None]]:
        return [(wid, p.exitcode) for wid, p in enumerate(self.procs) if p is not None and not p.is_alive()]

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


# -- scheduling -----------------------------------------------------------

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
    sessions = min(share, 4)
    plan = {"sessions": sessions, "threads": max(1, share // sessions)}
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        allowed = []
    if workers <= len(allowed) and len(allowed) <= cores:  # disjoint shares of the cores
        pins: list[list[int] | None] = [allowed[k * share : (k + 1) * share] for k in range(workers)]
    else:
        pins = [None] * workers
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
) -> BatchResult:
    """Render many jobs on local worker processes; resumable.

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
    checked = read_jobs(jobs, output_dir=output_dir, base=base)
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
        runtime = next((str(j.options["runtime"]) for j, _ in todo if "runtime" in j.options), DEFAULT_RUNTIME)
        n_workers, plan, pins = _plan(len(groups), workers, runtime)
        n_workers = min(n_workers, len(todo))
        pool = _LocalPool(n_workers, plan, pins[:n_workers])
        _schedule(pool, groups, results, manifest, n_workers=n_workers, retries=retries, progress=progress,
                  total=len(checked))
    ordered = [results.get(j.line) or JobResult(j.line, "failed", str(j.output), error="not run: no worker left")
               for j in checked]
    counts = {s: sum(r.status == s for r in ordered) for s in ("done", "skipped", "failed")}
    return BatchResult(ordered, manifest, time.perf_counter() - t0, n_workers, counts)


def _schedule(pool: _LocalPool, groups: OrderedDict, results: dict[int, JobResult], manifest: Path, *,
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
            for wid, code in pool.dead():
                if wid not in running:  # died idle: leave the slot empty
                    pool.procs[wid] = None
                    pool.conns[wid].close()
                    pool.conns[wid] = None
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
                                               f"worker process died (exit code {code}) on each of "
                                               f"{attempts[job.line]} attempts", attempts[job.line]))
                pool.start(wid)  # a fresh worker in the slot
                last_group.pop(wid, None)
                dispatch(wid)
                while idle and any(pending.values()):  # a retried job may wait for an idle worker
                    dispatch(idle.pop())
    finally:
        for wid, (job, _) in running.items():  # interrupted: no partial output may stay
            p = pool.procs[wid]
            if p is not None and p.is_alive():
                p.terminate()
                p.join(timeout=5)
            _discard_parts(job.output)
        pool.close()
        if bar is not None:
            bar.close()
