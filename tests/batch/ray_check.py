"""Run inside a network namespace with only loopback (see tests/batch/test_batch.py):
render_batch on Ray actors of a local Ray instance (Ray's servers bind every
interface; the namespace has only loopback). argv: the inputs folder, the
work folder, the manifest (JSON list). Prints one JSON line with the
results of each run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synctalk_fast.batch import render_batch
from synctalk_fast.batch.worker import TEST_CRASH_ENV


def main(inputs: Path, work: Path, jobs: list[dict]) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    runs = {}
    # 1. a Ray instance started (and shut down) by render_batch; 2 actors; the
    # first job's first attempt dies midway and is retried on a new actor.
    os.environ[TEST_CRASH_ENV] = f"{jobs[0]['output']}:1"
    r = render_batch(
        jobs, output_dir=work / "shared", base=inputs, ray_address="local", workers=2, retries=1, progress=False
    )
    runs["shared"] = r.to_dict()
    import ray

    runs["shut_down"] = not ray.is_initialized()
    # 2. inputs shipped through the object store, on a Ray the caller started;
    # a job whose every attempt dies is failed after its retries.
    os.environ[TEST_CRASH_ENV] = f"{jobs[1]['output']}:9"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    r = render_batch(
        jobs,
        output_dir=work / "shipped",
        base=inputs,
        ray_address="local",
        num_cpus=1,
        retries=1,
        ship_inputs=True,
        progress=False,
    )
    runs["shipped"] = r.to_dict()
    try:  # an actor no node can hold is refused, not left waiting
        render_batch(jobs, output_dir=work / "too_big", base=inputs, ray_address="local", num_cpus=3, progress=False)
        runs["too_big"] = "ran"
    except ValueError as e:
        runs["too_big"] = str(e)
    runs["still_up"] = ray.is_initialized()
    ray.shutdown()
    return runs


if __name__ == "__main__":
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]))))
