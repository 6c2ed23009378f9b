"""The restricted unpickler and the frozen stand-ins it builds instead of torch objects.

``find_class`` resolves only the globals a state dict needs (see
:data:`_SAFE_GLOBALS`); each is a stand-in defined here, so no function
named by a file ever runs. Stand-ins refuse pickle ``BUILD``, and every
tensor view is bounds-checked against its storage before it is materialized.
"""

from __future__ import annotations

import _compat_pickle  # the stdlib table pickle itself uses for Python 2 names
import collections
import math
import operator
import pickle
from collections.abc import Callable
from typing import IO, Any, Final

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...errors import CheckpointError

_RESAVE_HINT: Final = "load it with torch and re-save the weights with torch.save(model.state_dict(), path)"

# --------------------------------------------------------------------------
# Frozen stand-ins returned by find_class / persistent_load
# --------------------------------------------------------------------------


class _Frozen:
    """Base for stand-ins: immutable after ``__init__`` and immune to BUILD."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise CheckpointError(f"refusing to modify {type(self).__name__} from a pickle")

    def __delattr__(self, name: str) -> None:
        raise CheckpointError(f"refusing to modify {type(self).__name__} from a pickle")

    # pickle's BUILD opcode calls __setstate__ when present instead of
    # writing attributes; raising here keeps crafted state out.
    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"refusing to set state on {type(self).__name__} from a pickle")


class _StorageType(_Frozen):
    """Stand-in for a typed storage class such as ``torch.FloatStorage``."""

    __slots__ = ("name", "disk_code", "itemsize", "out_dtype")

    name: str
    disk_code: str
    itemsize: int
    out_dtype: np.dtype

    def __init__(self, name: str, disk_code: str, out_dtype: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "disk_code", disk_code)
        object.__setattr__(self, "itemsize", np.dtype(disk_code).itemsize)
        object.__setattr__(self, "out_dtype", np.dtype(out_dtype))

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


# name -> (on-disk numpy code without byte order, returned numpy dtype)
_STORAGE_SPECS: Final = {
    "FloatStorage": ("f4", "float32"),
    "DoubleStorage": ("f8", "float64"),
    "HalfStorage": ("f2", "float16"),
    "BFloat16Storage": ("u2", "float32"),  # bf16 bits, widened to float32
    "LongStorage": ("i8", "int64"),
    "IntStorage": ("i4", "int32"),
    "ShortStorage": ("i2", "int16"),
    "CharStorage": ("i1", "int8"),
    "ByteStorage": ("u1", "uint8"),
    "BoolStorage": ("u1", "bool"),
}
_STORAGE_TYPES: Final = {name: _StorageType(name, code, out) for name, (code, out) in _STORAGE_SPECS.items()}


class _TorchDtype(_Frozen):
    """Stand-in for a ``torch.<dtype>`` global appearing in metadata."""

    __slots__ = ("name",)

    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_DTYPE_ALIASES: Final = {
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}
_TORCH_DTYPES: Final = {alias: _TorchDtype(canon) for alias, canon in _DTYPE_ALIASES.items()}


class _StorageRef(_Frozen):
    """A storage named by the pickle; its bytes are read only when needed.

    ``numel`` counts elements of ``stype`` and has already been checked
    against the archive, so ``array()`` always yields ``numel`` elements.
    """

    __slots__ = ("key", "stype", "numel", "_reader", "_cache")

    key: str
    stype: _StorageType
    numel: int
    _reader: Callable[[], np.ndarray]
    _cache: list[np.ndarray]

    def __init__(self, key: str, stype: _StorageType, numel: int, reader: Callable[[], np.ndarray]) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "stype", stype)
        object.__setattr__(self, "numel", numel)
        object.__setattr__(self, "_reader", reader)
        object.__setattr__(self, "_cache", [])

    @property
    def nbytes(self) -> int:
        return self.numel * self.stype.itemsize

    def array(self) -> np.ndarray:
        """Return the decoded, native-endian 1-D storage (read once, cached)."""
        if not self._cache:
            arr = self._reader()
            if arr.shape != (self.numel,):
                raise CheckpointError(f"storage {self.key!r}: expected {self.numel} elements, read {arr.size}")
            self._cache.append(arr)
        return self._cache[0]


class _TensorRef(_Frozen):
    """A tensor as described by ``_rebuild_tensor_v2``: a strided storage view."""

    __slots__ = ("storage", "offset", "size", "stride")

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        if not isinstance(storage, _StorageRef):
            raise CheckpointError(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
        off = _as_int(offset, "storage offset")
        sz = _as_int_tuple(size, "size")
        st = _as_int_tuple(stride, "stride")
        if len(sz) != len(st):
            raise CheckpointError(f"tensor size {sz} and stride {st} differ in length")
        if off < 0 or any(d < 0 for d in sz) or any(s < 0 for s in st):
            raise CheckpointError(f"negative offset/size/stride in tensor (offset={off}, size={sz}, stride={st})")
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "offset", off)
        object.__setattr__(self, "size", sz)
        object.__setattr__(self, "stride", st)

    @property
    def numel(self) -> int:
        return math.prod(self.size)

    @property
    def nbytes(self) -> int:
        return self.numel * self.storage.stype.out_dtype.itemsize

    def materialize(self) -> np.ndarray:
        """Copy the view into a new C-contiguous, writable array."""
        out_dtype = self.storage.stype.out_dtype
        if self.numel == 0:
            return np.empty(self.size, dtype=out_dtype)
        last = self.offset + sum((d - 1) * s for d, s in zip(self.size, self.stride))
        if last >= self.storage.numel:
            raise CheckpointError(
                f"tensor view (offset={self.offset}, size={self.size}, "
                f"stride={self.stride}) exceeds storage {self.storage.key!r} "
                f"of {self.storage.numel} elements"
            )
        base = self.storage.array()[self.offset :]
        # Invariant: offset + sum((size-1)*stride) < numel, all terms >= 0,
        # so every element addressed by the view lies inside `base`.
        view = as_strided(
            base,
            shape=self.size,
            strides=tuple(s * base.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, dtype=out_dtype, order="C", copy=True)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise CheckpointError(f"tensor {what} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise CheckpointError(f"tensor {what} must be an integer, got {type(value).__name__}") from None


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise CheckpointError(f"tensor {what} must be a tuple, got {type(value).__name__}")
    return tuple(_as_int(v, what) for v in value)


class _SafeCallable(_Frozen):
    """Frozen wrapper so a pickle cannot rebind attributes of our functions."""

    __slots__ = ("qualname", "_fn")

    qualname: str
    _fn: Callable[..., Any]

    def __init__(self, qualname: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "qualname", qualname)
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        try:
            return self._fn(*args)
        except TypeError as exc:
            raise CheckpointError(f"bad arguments to {self.qualname}: {exc}") from None

    def __repr__(self) -> str:
        return f"<safe stand-in for {self.qualname}>"


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    metadata: Any = None,
) -> _TensorRef:
    # requires_grad, hooks and metadata (conj/neg bits) do not affect the
    # values of the real dtypes supported here.
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise CheckpointError(f"parameter wraps {type(data).__name__}, expected a tensor")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> _TensorRef:
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    if not isinstance(dims, (tuple, list)):
        raise CheckpointError(f"torch.Size expects a tuple, got {type(dims).__name__}")
    return tuple(_as_int(d, "torch.Size entry") for d in dims)


_SAFE_GLOBALS: Final[dict[tuple[str, str], Any]] = {
    # A C type whose attributes cannot be rebound; building one runs no user code.
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _SafeCallable("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _SafeCallable("torch._utils._rebuild_tensor", _rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _SafeCallable("torch._utils._rebuild_parameter", _rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _SafeCallable(
        "torch._utils._rebuild_parameter_with_state", _rebuild_parameter_with_state
    ),
    ("torch", "Size"): _SafeCallable("torch.Size", _torch_size),
}
for _name, _stype in _STORAGE_TYPES.items():
    _SAFE_GLOBALS[("torch", _name)] = _stype
    _SAFE_GLOBALS[("torch.cuda", _name)] = _stype  # legacy files from GPU tensors
for _alias, _dtype in _TORCH_DTYPES.items():
    _SAFE_GLOBALS[("torch", _alias)] = _dtype
del _name, _stype, _alias, _dtype


# --------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler resolving only ``_SAFE_GLOBALS``; storages via ``load_storage``."""

    def __init__(
        self,
        file: IO[bytes],
        load_storage: Callable[[tuple[Any, ...]], Any] | None,
    ) -> None:
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        module, name = _py3_name(module, name)
        try:
            return _SAFE_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            pass
        raise CheckpointError(
            f"refusing to load global '{module}.{name}': a state dict may only "
            "reference tensors, storages and plain containers (the file may be a "
            f"pickled model or a malicious pickle); if you trust it, {_RESAVE_HINT}"
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise CheckpointError("unexpected persistent id in checkpoint header")
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"malformed persistent id {pid!r}")
        kind = _ascii(pid[0])
        if kind == "module":
            raise CheckpointError("checkpoint contains a pickled nn.Module (torch.save(model)); " + _RESAVE_HINT)
        if kind != "storage":
            raise CheckpointError(f"unknown persistent id type {kind!r}")
        return self._load_storage(pid)


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 names (``__builtin__.eval``) as pickle's ``fix_imports`` does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _ascii(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise CheckpointError(f"non-ASCII identifier {value!r} in checkpoint") from None
    if isinstance(value, str):
        return value
    raise CheckpointError(f"expected a string in persistent id, got {type(value).__name__}")


def _unpickle(unpickler: _RestrictedUnpickler, failure: str) -> Any:
    """Run ``unpickler``; any error other than a refusal becomes ``failure: ...``."""
    try:
        return unpickler.load()
    except CheckpointError:
        raise
    except Exception as exc:  # only our stand-ins and OrderedDict can have run
        raise CheckpointError(f"{failure}: {type(exc).__name__}: {exc}") from exc
