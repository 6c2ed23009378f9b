"""Safe, torch-free reader for PyTorch state-dict checkpoints.

Reads ``.pth`` / ``.pt`` files written by :func:`torch.save` into a plain
``dict`` of :class:`numpy.ndarray`, without importing torch.

Safety guarantee
----------------
Unpickling goes through a restricted :class:`pickle.Unpickler` whose
``find_class`` resolves only the handful of globals a state dict needs
(``collections.OrderedDict``, the ``torch._utils`` tensor/parameter rebuild
functions, the typed storage classes, ``torch.Size`` and ``torch`` dtype
names).  Every torch global is replaced by a stand-in defined in this module;
torch is never imported and no function named by the file is ever called.
Any other global raises :class:`CheckpointError` before anything is
constructed, so a pickled payload such as ``os.system`` cannot run.

Stand-in objects reject pickle ``BUILD`` so a crafted file cannot mutate
them, every tensor view is bounds-checked against its storage before
:func:`numpy.lib.stride_tricks.as_strided` is applied, storage sizes are
checked against the archive before reading, and the total size of the
returned arrays is bounded relative to the storage bytes they come from.

Supported formats
-----------------
* The zip format (``torch.save`` default since torch 1.6): an archive with
  ``<name>/data.pkl``, ``<name>/data/<key>`` storage records and an optional
  ``<name>/byteorder`` record (``little`` when absent).
* The legacy non-zip format (torch < 1.6, or
  ``_use_new_zipfile_serialization=False``): consecutive pickles holding the
  magic number, protocol version, system info and the object, then the list
  of storage keys followed by the raw storages.

The much older tar-based format and TorchScript archives (``torch.jit.save``) are
refused with a message explaining how to re-save the weights.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any, Final

import numpy as np

from ...errors import CheckpointError
from .formats import _is_tar, _read_legacy, _read_zip
from .unpickle import _RESAVE_HINT, _TensorRef

__all__ = ["CheckpointError", "load_state_dict"]

_WRAPPER_KEYS: Final = ("state_dict", "model_state_dict", "model", "net")
_MAX_UNWRAP_DEPTH: Final = 32

# Materialized arrays may exceed the storage bytes they view (tied weights,
# expanded tensors saved with stride 0) but only by this factor plus slack;
# a tiny crafted file must not be able to demand terabytes of copies.
_OUTPUT_BUDGET_FACTOR: Final = 4
_OUTPUT_BUDGET_SLACK: Final = 1 << 28


def _unwrap(obj: Any) -> Any:
    seen: set[int] = set()
    while isinstance(obj, dict):
        if id(obj) in seen or len(seen) >= _MAX_UNWRAP_DEPTH:
            raise CheckpointError("checkpoint wrappers nest too deeply or form a cycle")
        seen.add(id(obj))
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict):
                obj = inner
                break
        else:
            return obj
    return obj


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    stripped = True
    while stripped:
        stripped = False
        for p in prefixes:
            # A key is never stripped down to the empty string.
            if key.startswith(p) and len(key) > len(p):
                key = key[len(p) :]
                stripped = True
                break
    return key


def _normalize_prefixes(prefixes: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    out = tuple(prefixes)
    for p in out:
        if not isinstance(p, str) or not p:
            raise ValueError(f"prefixes must be non-empty strings, got {p!r}")
    return out


def _extract(obj: Any, prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    obj = _unwrap(obj)
    if isinstance(obj, _TensorRef):
        raise CheckpointError("checkpoint holds a single tensor, not a state dict")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")

    tensors: dict[str, _TensorRef] = {}
    origin: dict[str, str] = {}
    for key, value in obj.items():
        if not isinstance(value, _TensorRef):
            continue  # metadata such as an epoch counter
        if not isinstance(key, str):
            raise CheckpointError(f"state dict key {key!r} is not a string")
        new = _strip(key, prefixes)
        if new in tensors:
            raise CheckpointError(
                f"keys {origin[new]!r} and {key!r} both become {new!r} after stripping prefixes {prefixes}"
            )
        tensors[new] = value
        origin[new] = key
    if not tensors:
        shown = list(obj)[:10]
        raise CheckpointError(f"checkpoint contains no tensors (top-level keys: {shown})")

    storage_bytes = sum({id(t.storage): t.storage.nbytes for t in tensors.values()}.values())
    budget = _OUTPUT_BUDGET_FACTOR * storage_bytes + _OUTPUT_BUDGET_SLACK
    total = sum(t.nbytes for t in tensors.values())
    if total > budget:
        raise CheckpointError(
            f"tensors would need {total} bytes from {storage_bytes} bytes of storage; "
            "refusing (crafted or pathological checkpoint)"
        )
    try:
        return {k: t.materialize() for k, t in tensors.items()}
    except (ValueError, MemoryError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot materialize tensors: {exc}") from exc


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def load_state_dict(
    path: str | os.PathLike[str],
    *,
    prefixes: Iterable[str] | str = ("module.", "audio_encoder."),
) -> dict[str, np.ndarray]:
    """Read a ``torch.save`` state dict as numpy arrays, without torch.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pth`` / ``.pt`` file in the zip format (default since torch 1.6)
        or the legacy non-zip format.
    prefixes : iterable of str, optional
        Key prefixes to remove.  For each key the first matching prefix is
        stripped, repeatedly, so ``module.audio_encoder.0.weight`` becomes
        ``0.weight``; a key is never stripped to the empty string.

    Returns
    -------
    dict of str to numpy.ndarray
        Tensor entries in file order.  Each array is C-contiguous, writable
        and owns its memory, even where tensors shared a storage or were
        non-contiguous views.  dtypes map as float32/float64/float16/int64/
        int32/int16/int8/uint8/bool; bfloat16 tensors are returned as float32
        (exact: the bf16 bits become the high half of a float32).

    Raises
    ------
    CheckpointError
        If the file is missing or unreadable, is not a PyTorch checkpoint, is
        in the tar-based or TorchScript format, references a pickle global
        outside the state-dict allowlist, has inconsistent storages, holds no
        tensors, or if two keys collide after prefix stripping.
    ValueError
        If ``prefixes`` contains an empty or non-string entry.

    Notes
    -----
    A wrapped checkpoint is unwrapped first: while the object is a dict
    holding a dict under ``"state_dict"``, ``"model_state_dict"``,
    ``"model"`` or ``"net"`` (checked in that order), that inner dict is used.
    Non-tensor entries (e.g. an ``epoch`` int) are then dropped.  Storages
    that no kept tensor references (e.g. optimizer state) are never read.
    """
    prefix_tuple = _normalize_prefixes(prefixes)
    path_str = os.fspath(path)
    try:
        f = open(path_str, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path_str}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot open checkpoint {path_str}: {exc}") from exc

    with f:
        try:
            head = f.read(512)
            if not head:
                raise CheckpointError(f"{path_str}: empty file, not a PyTorch checkpoint")
            f.seek(0)
            if zipfile.is_zipfile(f):
                f.seek(0)
                try:
                    with zipfile.ZipFile(f) as zf:
                        return _extract(_read_zip(zf, path_str), prefix_tuple)
                except zipfile.BadZipFile as exc:
                    raise CheckpointError(f"{path_str}: corrupt zip archive: {exc}") from exc
            f.seek(0)
            if _is_tar(f):
                raise CheckpointError(
                    f"{path_str}: the old tar-based torch.save format is not supported; {_RESAVE_HINT}"
                )
            f.seek(0)
            return _extract(_read_legacy(f, path_str), prefix_tuple)
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path_str}: {exc}") from exc
