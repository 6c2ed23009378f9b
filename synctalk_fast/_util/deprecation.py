"""Renamed keywords keep working for a while, with a DeprecationWarning."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["renamed"]


def renamed(
    old: Mapping[str, Any], new: dict[str, Any], names: Mapping[str, str], *, where: str, stacklevel: int = 3
) -> dict[str, Any]:
    """Move the deprecated keywords of ``old`` (``names``: old name -> new
    name) into ``new``, warning once per use; a keyword given under both
    names, or an ``old`` keyword that is not deprecated, is a ``TypeError``."""
    for key, value in old.items():
        if key not in names:
            raise TypeError(f"{where}() got an unexpected keyword argument {key!r}")
        target = names[key]
        if new.get(target) is not None:
            raise TypeError(f"{where}() got both {key!r} and its new name {target!r}")
        warnings.warn(f"{where}({key}=...) is deprecated; use {target}=...", DeprecationWarning, stacklevel=stacklevel)
        new[target] = value
    return new
