"""What this process may use of the machine: cores and the user cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["cpu_cores", "cache_dir"]


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


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
