"""What a batch has done: the results manifest, the digest sidecars, and resuming from them.

- ``OUTPUT_DIR/results.jsonl`` (:func:`write_results`): one :class:`JobResult`
  a line, in manifest order, rewritten atomically as jobs finish.
- ``.<name>.job.json`` beside each finished output (:func:`write_sidecar`):
  the digest of what decided the output (:func:`job_digest`: inputs,
  options, package version), its frames and its size. A job whose output
  is complete and whose digest matches is already done
  (:func:`already_done`).
- :func:`discard_parts`: the partial output a dead worker left.

Everything here runs in the parent process, the only writer of these
files; the digest cache (``_file_digests``) is the parent's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.atomic import PART_SUFFIX, write_atomic
from .._version import __version__
from .manifest import BatchJob

__all__ = [
    "JobResult",
    "file_digest",
    "job_digest",
    "output_size",
    "already_done",
    "write_sidecar",
    "write_results",
    "discard_parts",
]


@dataclass
class JobResult:
    """How one job ended in this run (a line of ``results.jsonl``).

    Attributes
    ----------
    job : int
        The manifest line.
    status : str
        ``"done"``, ``"skipped"`` or ``"failed"``.
    output : str
        The output's absolute path.
    frames : int
        Frames written (of the earlier run, for a skipped job).
    seconds : float
        The worker's time on the job.
    error : str or None
        Why it failed, one line.
    attempts : int
        Worker runs (0 for a skipped job).
    engine : dict or None
        What the job ran with (:attr:`GenerateResult.engine
        <synctalk_fast.pipeline.GenerateResult>`: runtime, provider,
        precision, batch size, sessions, ...); None unless done.
    """

    job: int
    status: str
    output: str
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    attempts: int = 0
    engine: dict[str, Any] | None = None


_file_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256; parent process only


def file_digest(path: Path) -> str:
    """sha256 of a file (cached by size and mtime), of a folder's listing
    (names, sizes and mtimes of its files), or ``"missing"``."""
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
    template by its files' names, sizes and mtimes), its options (those of
    its manifest row and those ``render_batch`` gave every job) and the
    package version."""
    record = {
        "version": __version__,
        "options": job.options,
        "inputs": {k: file_digest(p) for k, p in sorted(job.inputs.items())},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def output_size(path: Path) -> int | None:
    """A video's size in bytes, a frames folder's ``frame_*`` count, None when absent."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.name.startswith("frame_"))
    return None


def already_done(job: BatchJob, digest: str) -> int | None:
    """The frames of a complete output made from the same inputs and options, else None."""
    try:
        record = json.loads(job.sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("digest") != digest:
        return None
    size = output_size(job.output)
    if size is None or size != record.get("size"):
        return None
    return int(record.get("frames", 0))


def write_sidecar(job: BatchJob, digest: str, frames: int) -> None:
    """Record a finished output's digest, frames and size beside it."""
    record = {"digest": digest, "frames": frames, "size": output_size(job.output), "job": job.line}
    write_atomic(job.sidecar, json.dumps(record).encode())


def write_results(path: Path, results: Mapping[int, JobResult]) -> None:
    """Write ``results.jsonl`` (atomically): one JSON line a job, by manifest line."""
    lines = [json.dumps(dataclasses.asdict(r)) for _, r in sorted(results.items())]
    write_atomic(path, ("\n".join(lines) + "\n" if lines else "").encode())


def discard_parts(output: Path) -> None:
    """Delete a dead worker's partial output: ``.<name>.<8 hex>.part`` beside ``output``."""
    pattern = re.compile(rf"\.{re.escape(output.name)}\.[0-9a-f]{{8}}{re.escape(PART_SUFFIX)}")
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
