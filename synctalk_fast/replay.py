"""Kept for imports of the former path: see :mod:`synctalk_fast.stream.replay`."""

from .stream.replay import read_native, replay

__all__ = ["replay", "read_native"]
