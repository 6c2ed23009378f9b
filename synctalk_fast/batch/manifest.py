"""A batch manifest read and checked: its jobs as :class:`BatchJob`, every problem with its line.

A manifest is a ``.jsonl`` file (one JSON object a line), a ``.csv`` file (a
header row of keys) or a list of dicts. :func:`read_jobs` checks all of it
before anything runs and reports every problem at once, each prefixed with
``<manifest>:<line>:``.

The keys a job may have: its inputs (:data:`PATH_KEYS`), ``output``, the
engine options (the fields of :class:`~synctalk_fast.engine.EngineOptions`,
converted and checked by it), the pipeline-only ``mode`` and ``overlap``, and
the options of :meth:`~synctalk_fast.pipeline.Pipeline.generate`
(:data:`GENERATE_KEYS`). Pure functions; nothing here touches the outputs.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.options import OPTION_NAMES, EngineOptions
from ..sinks import VIDEO_SUFFIXES

__all__ = ["BatchJob", "read_jobs", "Jobs", "RESULTS_NAME", "PATH_KEYS", "PIPELINE_KEYS", "GENERATE_KEYS", "JOB_KEYS"]

#: What :func:`read_jobs` and ``render_batch`` take: a manifest's path, or the jobs as dicts.
Jobs = str | os.PathLike[str] | Sequence[Mapping[str, Any]]

#: The results manifest, in the output directory.
RESULTS_NAME = "results.jsonl"
#: Inputs that are files or folders (resolved against the manifest's folder).
PATH_KEYS = ("audio", "features", "template", "unet", "audio_encoder")
#: Options of :class:`~synctalk_fast.pipeline.Pipeline` (they decide which
#: loaded pipeline a job uses): its own two, then every engine option.
PIPELINE_KEYS = ("mode", "overlap", *OPTION_NAMES)
#: Options of :meth:`~synctalk_fast.pipeline.Pipeline.generate`.
GENERATE_KEYS = ("start", "fps", "crf", "preset", "encoder", "feather", "image_format")
#: Every key a job may have.
JOB_KEYS = (*PATH_KEYS, "output", *PIPELINE_KEYS, *GENERATE_KEYS)


def _boolean(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


#: How a CSV cell (a string) of a key that is not an engine option converts;
#: keys not listed stay strings. Engine options convert themselves.
_CELL_TYPES: dict[str, Callable[[str], Any]] = {
    "start": int,
    "crf": int,
    "feather": int,
    "fps": float,
    "overlap": _boolean,
}


@dataclass
class BatchJob:
    """One job, checked: absolute paths, and the options by API name.

    Attributes
    ----------
    line : int
        Line number in the manifest (1-based; the index + 1 for a list).
    name : str
        The output as given, relative to the output directory.
    output : Path
        The output, absolute.
    inputs : dict of str to Path
        The :data:`PATH_KEYS` present -> absolute path.
    options : dict of str to Any
        The :data:`PIPELINE_KEYS` and :data:`GENERATE_KEYS` that apply to
        the job (given by its row, or to every job by ``render_batch``),
        converted; engine options as in :meth:`EngineOptions.to_dict`.
    """

    line: int
    name: str
    output: Path
    inputs: dict[str, Path]
    options: dict[str, Any]

    @property
    def group(self) -> tuple[str, str]:
        """Jobs of one group share a loaded U-Net and a template cache."""
        return (str(self.inputs.get("unet", "")), str(self.inputs.get("template", "")))

    @property
    def sidecar(self) -> Path:
        """The digest record beside the output: ``.<name>.job.json``."""
        return self.output.parent / f".{self.output.name}.job.json"

    @property
    def engine_options(self) -> dict[str, Any]:
        """The job's engine options (the :data:`OPTION_NAMES` among its options)."""
        return {k: v for k, v in self.options.items() if k in OPTION_NAMES}


def _read_rows(jobs: Jobs) -> tuple[list[tuple[int, Any]], list[str]]:
    """(line, dict or error) pairs of the manifest, and manifest-wide problems."""
    if not isinstance(jobs, (str, os.PathLike)):
        return [(k + 1, job) for k, job in enumerate(jobs)], []
    path = Path(jobs)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"{path}: cannot read the manifest: {e}"]
    if path.suffix.lower() == ".csv":
        return _csv_rows(text), []
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
        return [], [f"{path}: a manifest is a .jsonl or .csv file"]
    rows: list[tuple[int, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            rows.append((n, f"bad JSON: {e.msg} (column {e.colno})"))
    return rows, []


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    """(line, dict or error) pairs of a CSV manifest; empty cells are left out."""
    rows: list[tuple[int, Any]] = []
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        if None in row:
            rows.append((reader.line_num, "more cells than the header has columns"))
            continue
        rows.append(
            (
                reader.line_num,
                {k.strip(): v.strip() for k, v in row.items() if k is not None and v is not None and v.strip() != ""},
            )
        )
    return rows


def _options(row: Mapping[str, Any], bad: list[str]) -> dict[str, Any]:
    """The row's options, converted (problems appended to ``bad``)."""
    options: dict[str, Any] = {}
    given = [k for k in OPTION_NAMES if k in row]
    if given:
        try:
            engine = EngineOptions.from_mapping(row).to_dict()
        except (ValueError, TypeError) as e:
            bad.append(str(e))
        else:
            options.update({k: engine[k] for k in given})
    for key in (*PIPELINE_KEYS, *GENERATE_KEYS):
        if key in row and key not in OPTION_NAMES:
            value = row[key]
            try:
                options[key] = _CELL_TYPES[key](value) if isinstance(value, str) and key in _CELL_TYPES else value
            except ValueError:
                bad.append(f"{key}: bad value {value!r}")
    return options


def _output(name: str, out: Path, seen: dict[Path, int], line: int, bad: list[str]) -> Path:
    """The absolute output of ``name`` (problems appended to ``bad``; ``seen`` records it)."""
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
    return output


def _check_row(
    row: Mapping[str, Any], line: int, *, out: Path, root: Path, seen: dict[Path, int]
) -> BatchJob | list[str]:
    """The job of a manifest row, or its problems."""
    bad: list[str] = []
    unknown = sorted(set(row) - set(JOB_KEYS))
    if unknown:
        bad.append(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
    missing = [k for k in ("template", "unet", "output") if not row.get(k)]
    if not row.get("audio") and not row.get("features"):
        missing.insert(0, "audio (or features)")
    if missing:
        bad.append(f"missing {', '.join(missing)}")
    options = _options(row, bad)
    inputs = {k: (root / os.path.expanduser(str(row[k]))).resolve() for k in PATH_KEYS if row.get(k)}
    name = str(row.get("output") or "")
    output = _output(name, out, seen, line, bad) if name else None
    if bad or output is None:
        return bad
    return BatchJob(line, name, output, inputs, options)


def read_jobs(
    jobs: Jobs, *, output_dir: str | os.PathLike[str], base: str | os.PathLike[str] | None = None
) -> list[BatchJob]:
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
        bad JSON, an unknown key, a missing field, a bad value (an engine
        option as :class:`~synctalk_fast.engine.EngineOptions` checks it),
        an output outside the output directory, two jobs with one output.
    """
    out = Path(output_dir).resolve()
    if base is None:
        base = Path(jobs).parent if isinstance(jobs, (str, os.PathLike)) else Path.cwd()
    root = Path(base).resolve()
    where = f"{jobs}" if isinstance(jobs, (str, os.PathLike)) else "jobs"
    rows, problems = _read_rows(jobs)
    found: list[BatchJob] = []
    seen: dict[Path, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            problems.append(f"{where}:{line}: {row}")
        elif not isinstance(row, Mapping):
            problems.append(f"{where}:{line}: a job is a JSON object, not {type(row).__name__}")
        else:
            checked = _check_row(row, line, out=out, root=root, seen=seen)
            if isinstance(checked, BatchJob):
                found.append(checked)
            else:
                problems.append(f"{where}:{line}: {'; '.join(checked)}")
    if not problems and not found:
        problems.append(f"{where}: no jobs")
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in the manifest:\n" + "\n".join(problems))
    return found
