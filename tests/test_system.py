"""Container limits: cores and memory read from a (fake) cgroup folder."""

from __future__ import annotations

import math
import os

import pytest

from synctalk_fast._util import system as _system


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _write(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    "files,cpus",
    [
        ({"cpu.max": "150000 100000"}, 1.5),  # docker --cpus 1.5 (cgroup v2)
        ({"cpu.max": "max 100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, 4.0),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({}, None),
    ],
)
def test_cpu_quota(tmp_path, files, cpus):
    root = _write(tmp_path, files)
    assert _system.cgroup_cpu_limit(root) == cpus
    want = _affinity() if cpus is None else min(_affinity(), math.ceil(cpus))
    assert _system.cpu_cores(cgroup=root) == want


def test_a_quota_below_the_cores_caps_the_threads(tmp_path):
    root = _write(tmp_path, {"cpu.max": "50000 100000"})  # half a CPU
    assert _system.cpu_cores(cgroup=root) == 1


@pytest.mark.parametrize(
    "files,left",
    [
        ({"memory.max": str(8 << 30), "memory.current": str(3 << 30)}, 5 << 30),  # -m 8g, 3 GiB in use (v2)
        ({"memory.max": "max", "memory.current": "123"}, None),
        ({"memory/memory.limit_in_bytes": str(2 << 30), "memory/memory.usage_in_bytes": str(1 << 29)}, 3 << 29),  # v1
        ({"memory/memory.limit_in_bytes": "9223372036854771712"}, None),  # v1 "no limit"
        ({}, None),
    ],
)
def test_memory_limit(tmp_path, files, left):
    root = _write(tmp_path, files)
    assert _system.cgroup_memory_available(root) == left
    free = _system.available_memory(cgroup=root)
    if left is not None:
        assert free is not None and free <= left
    else:
        assert free == _system.available_memory(cgroup=tmp_path / "none")


def test_the_frame_cache_follows_the_container_limit(tmp_path, monkeypatch, make_template):
    from synctalk_fast.template import Template

    folder = make_template(frames=6)
    frame = 320 * 240 * 3
    fake = _write(tmp_path / "cg", {"memory.max": str(12 * frame), "memory.current": "0"})
    monkeypatch.setattr(_system, "CGROUP_ROOT", fake)
    assert Template(folder).cache.capacity == 3  # a quarter of 12 frames' worth
