"""What this process may use of the machine: cores, memory, the user cache folder.

Container limits count: a cgroup CPU quota (``cpu.max``, or v1's
``cpu.cfs_quota_us``) caps the cores, and a cgroup memory limit
(``memory.max``, or v1's ``memory.limit_in_bytes``) caps the memory, so that
thread counts and caches sized from them neither oversubscribe nor get the
process OOM-killed in a container on a large host.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from pathlib import Path

__all__ = [
    "cpu_name",
    "cpu_flags",
    "cpu_cores",
    "available_memory",
    "cgroup_cpu_limit",
    "cgroup_memory_available",
    "cache_dir",
    "CGROUP_ROOT",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 writes a number near 2**63 for "no limit"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_limit(root: Path) -> float | None:
    """CPUs the cgroup's quota allows (``quota / period``), or None without a quota."""
    v2 = _read(root / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
            return int(quota) / int(period)
        return None
    quota_v1, period_v1 = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota_v1 is None or period_v1 is None:
        return None
    quota, period = quota_v1, period_v1
    if quota and period and quota.lstrip("-").isdigit() and period.isdigit() and int(quota) > 0 < int(period):
        return int(quota) / int(period)
    return None


def cgroup_memory_available(root: Path) -> int | None:
    """Bytes the cgroup's memory limit still allows (limit - usage), or None without a limit."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        limit = _read(root / limit_file)
        if limit is None:
            continue
        if not limit.isdigit() or int(limit) >= _UNLIMITED:
            return None
        usage = _read(root / usage_file)
        return max(0, int(limit) - (int(usage) if usage and usage.isdigit() else 0))
    return None


def cpu_cores(*, cgroup: Path | None = None) -> int:
    """Cores this process may use: its affinity mask, capped by a cgroup CPU
    quota (rounded up: a quota of 1.5 CPUs runs two threads)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        cores = max(1, os.cpu_count() or 1)
    quota = cgroup_cpu_limit(CGROUP_ROOT if cgroup is None else cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def available_memory(*, cgroup: Path | None = None) -> int | None:
    """Bytes of memory available to new allocations: Linux's MemAvailable
    (elsewhere the physical memory when known), capped by what a cgroup
    memory limit still allows; None when unknown."""
    found = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if found is None:
        try:
            found = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            found = None
    limit = cgroup_memory_available(CGROUP_ROOT if cgroup is None else cgroup)
    if limit is not None:
        found = limit if found is None else min(found, limit)
    return found


def cache_dir() -> Path:
    """Where derived files go (rewritten models, engine caches):
    ``$SYNCTALK_FAST_CACHE``, else the platform's user cache folder."""
    if os.environ.get("SYNCTALK_FAST_CACHE"):
        return Path(os.environ["SYNCTALK_FAST_CACHE"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "synctalk_fast"


def _cpuinfo(field: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == field), None)
    except OSError:
        return None


def cpu_name() -> str:
    """The processor's marketing name (``/proc/cpuinfo``), else what Python knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    """The CPU features that decide the reduced precisions: ``avx512_bf16``,
    ``amx`` (AMX-BF16 tiles), ``arm_fp16`` (an ARM CPU with fp16 arithmetic)."""
    flags = set((_cpuinfo("flags") or "").split())
    arm = platform.machine().lower() in ("arm64", "aarch64")
    arm_fp16 = arm and (sys.platform == "darwin" or "fphp" in set((_cpuinfo("Features") or "").split()))
    return {"avx512_bf16": "avx512_bf16" in flags, "amx": "amx_bf16" in flags, "arm_fp16": arm_fp16}
