"""The batch scheduler on an in-process fake pool: group affinity, retries, results, cleanup."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from synctalk_fast.batch import JobResult, read_jobs
from synctalk_fast.batch.manifest import BatchJob
from synctalk_fast.batch.pools import LocalPool, Pool
from synctalk_fast.batch.ray import RayPool
from synctalk_fast.batch.resume import job_digest
from synctalk_fast.batch.schedule import Scheduler
from synctalk_fast.batch.worker import Event


class FakePool:
    """Runs each job at once: its events are ready at the next ``events``
    call. ``die`` maps an output name to the attempts on which the worker
    dies instead."""

    def __init__(self, die: dict[str, int]):
        self.die = die
        self.queue: list[Event] = []
        self.gone: list[tuple[int, str]] = []
        self.ran: list[tuple[int, str, int]] = []  # (wid, job name, attempt)
        self.starts: list[int] = []
        self.forgotten: list[int] = []
        self.closed = False

    def start(self, wid: int) -> None:
        self.starts.append(wid)

    def send(self, wid: int, job: BatchJob, attempt: int) -> None:
        self.ran.append((wid, job.name, attempt))
        if attempt <= self.die.get(job.name, 0):
            (job.output.parent / f".{job.output.name}.0123abcd.part").write_bytes(b"partial")
            self.gone.append((wid, "exit code 86"))
            return
        job.output.write_bytes(b"video")
        self.queue += [
            ("frames", wid, job.line, 2),
            ("done", wid, job.line, {"frames": 2, "seconds": 0.5, "engine": {"batch_size": 4}}),
        ]

    def events(self, timeout: float) -> list[Event]:
        got, self.queue = self.queue, []
        return got

    def dead(self) -> list[tuple[int, str]]:
        gone, self.gone = self.gone, []
        return gone

    def kill(self, wid: int) -> None:
        pass

    def forget(self, wid: int) -> None:
        self.forgotten.append(wid)

    def close(self) -> None:
        self.closed = True


def _schedule(tmp_path, pool: Any, *, workers: int, retries: int) -> tuple[dict[int, JobResult], list[BatchJob]]:
    out = tmp_path / "out"
    out.mkdir()
    jobs = read_jobs(
        [{"audio": "a.wav", "template": f"t{k % 2}", "unet": "u.onnx", "output": f"clip{k}.mp4"} for k in range(6)],
        output_dir=out,
        base=tmp_path,
    )
    groups: OrderedDict[tuple[str, str], list] = OrderedDict()
    for job in jobs:
        groups.setdefault(job.group, []).append((job, job_digest(job)))
    results: dict[int, JobResult] = {}
    Scheduler(
        pool, groups, results, out / "results.jsonl", workers=workers, retries=retries, progress=False, total=len(jobs)
    ).run()
    return results, jobs


def test_pools_implement_the_protocol():
    names = {n for n in vars(Pool) if not n.startswith("_")}
    assert names == {"start", "send", "events", "dead", "kill", "forget", "close"}
    for cls in (LocalPool, RayPool):
        assert all(callable(getattr(cls, n, None)) for n in names), cls


def test_each_worker_keeps_to_its_group(tmp_path):
    pool = FakePool({})
    results, jobs = _schedule(tmp_path, pool, workers=2, retries=0)
    assert [results[j.line].status for j in jobs] == ["done"] * 6 and pool.closed
    by_worker: dict[int, set] = {}
    for wid, name, _ in pool.ran:
        by_worker.setdefault(wid, set()).add(jobs[int(name[4:-4])].group)
    assert sorted(map(len, by_worker.values())) == [1, 1]  # two groups, one each
    lines = [json.loads(s) for s in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [d["job"] for d in lines] == list(range(1, 7)) and all(d["engine"] == {"batch_size": 4} for d in lines)
    sidecar = json.loads(jobs[0].sidecar.read_text())
    assert sidecar == {"digest": job_digest(jobs[0]), "frames": 2, "size": 5, "job": 1}


def test_a_dead_workers_job_is_retried_then_failed(tmp_path):
    pool = FakePool({"clip0.mp4": 1, "clip3.mp4": 9})
    results, jobs = _schedule(tmp_path, pool, workers=1, retries=1)
    assert [results[j.line].status for j in jobs] == ["done", "done", "done", "failed", "done", "done"]
    assert [results[j.line].attempts for j in jobs] == [2, 1, 1, 2, 1, 1]
    assert results[4].error == "worker process died (exit code 86) on each of 2 attempts"
    assert pool.starts.count(0) == 4  # the first worker, and one a death
    assert pool.ran[:2] == [(0, "clip0.mp4", 1), (0, "clip0.mp4", 2)]  # retried first, on the fresh worker
    assert not list((tmp_path / "out").glob(".*.part")) and pool.closed
