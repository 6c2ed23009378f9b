"""Failures of the quantization tooling as one-line :class:`~synctalk_fast.errors.ModelError`.

ONNX, ONNX Runtime, NNCF and OpenVINO raise whatever they raise, often over
several lines and naming temporary files. :func:`failure` wraps each step
that calls them: the message becomes ``"<model>: int8 quantization failed
<doing>: <reason>"`` (:func:`reason` is the one place that message is
built); ``OSError`` (disk, files) and ``MemoryError`` pass unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelError

__all__ = ["failure", "reason"]


def reason(exc: BaseException, work: Path | None = None) -> str:
    """``exc`` as one line of at most 300 characters, the temporary folder ``work``'s prefix dropped."""
    text = str(exc)
    if work is not None:
        text = text.replace(str(work) + os.sep, "")
    text = " ".join(text.split()) or type(exc).__name__
    if not isinstance(exc, ModelError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def failure(model: str | os.PathLike[str], doing: str, work: Path | None = None) -> Iterator[None]:
    """Failures inside the block become a one-line :class:`ModelError` naming
    ``model`` and what was being done; ``OSError`` and ``MemoryError`` pass."""
    try:
        yield
    except (OSError, MemoryError):
        raise
    except Exception as exc:
        raise ModelError(f"{model}: int8 quantization failed {doing}: {reason(exc, work)}") from exc
