"""``synctalk-fast batch``: the jobs of a manifest on worker processes or Ray actors (resumable).

Engine flags given on the command line apply to every job and beat the
manifest's keys of the same names; a flag not given leaves each job's own
value (or the default). Ray is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.options import add_arguments
from .common import add_json, add_quiet, given_options, write_json

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Render the manifest's jobs; exit status 0 all done or skipped, 1 a job failed."""
    from ..batch import render_batch

    result = render_batch(
        args.jobs,
        output_dir=args.output_dir,
        workers=args.workers,
        retries=args.retries,
        progress=not args.quiet,
        ray_address=args.ray,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        ship_inputs=args.ship_inputs,
        **given_options(args),
    )
    if not args.quiet and args.json != "-":
        for r in result.results:
            if r.status == "failed":
                print(f"synctalk-fast: {args.jobs}:{r.job}: {r.output}: {r.error}", file=sys.stderr)
        print(result)
    write_json(args.json, result.to_dict())
    return result.exit_code  # 0 all done or skipped, 1 a job failed; a bad manifest is a ValueError (2)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` command to ``sub``."""
    p = sub.add_parser(
        "batch",
        help="render many jobs from a manifest on worker processes (resumable)",
        description="Render the jobs of a manifest (.jsonl: one JSON object a line; .csv: a header row) on worker "
        "processes that keep their models loaded. A job has audio (or features), template, unet, audio_encoder, "
        "output (a name under --output-dir) and any generate option by its API name (start, fps, crf, preset, "
        "feather, precision, runtime, ...); relative paths are relative to the manifest. Engine flags given here "
        "apply to every job and beat the manifest's keys. OUTPUT_DIR/results.jsonl "
        "records each job; a second run skips jobs whose output is complete and whose inputs are unchanged. "
        "With --ray the workers are Ray actors, on a local Ray instance or on the cluster at ADDRESS; the inputs "
        "and the output directory must then be on a file system every node shares (or use --ship-inputs). "
        "Exit status: 0 all done or skipped, 1 some job failed, 2 a bad manifest or bad options.",
    )
    p.add_argument("jobs", metavar="JOBS", help="manifest: .jsonl or .csv")
    p.add_argument("--output-dir", required=True, help="where the outputs and results.jsonl go (created if missing)")
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: one per template and U-Net, at most one per core; one on a GPU)",
    )
    p.add_argument("--retries", type=int, default=2, help="reruns of a job whose worker died (default: 2)")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the workers as Ray actors: on a new local Ray instance, or on the cluster at ADDRESS "
        "(auto, host:port or ray://host:port); needs synctalk-fast[ray]",
    )
    p.add_argument("--num-cpus", type=float, help="CPUs of each Ray actor (default: the cluster's, shared out)")
    p.add_argument("--num-gpus", type=float, help="GPUs of each Ray actor (default: 1 when the cluster has GPUs)")
    p.add_argument(
        "--ship-inputs",
        action="store_true",
        help="with --ray: send each template, network and audio "
        "file to the cluster once (Ray's object store) instead of reading them from a shared file system",
    )
    add_arguments(p.add_argument_group("engine options of every job (beat the manifest's)"))
    add_json(p, "the results")
    add_quiet(p)
    p.set_defaults(func=run)
