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

import _compat_pickle  # the stdlib table pickle itself uses for Python 2 names
import collections
import io
import math
import operator
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any, Final

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import CheckpointError

__all__ = ["CheckpointError", "load_state_dict"]


_RESAVE_HINT: Final = (
    "load it with torch and re-save the weights with "
    "torch.save(model.state_dict(), path)"
)

_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL: Final = 1001
_WRAPPER_KEYS: Final = ("state_dict", "model_state_dict", "model", "net")
_MAX_UNWRAP_DEPTH: Final = 32

# Materialized arrays may exceed the storage bytes they view (tied weights,
# expanded tensors saved with stride 0) but only by this factor plus slack;
# a tiny crafted file must not be able to demand terabytes of copies.
_OUTPUT_BUDGET_FACTOR: Final = 4
_OUTPUT_BUDGET_SLACK: Final = 1 << 28


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
_STORAGE_TYPES: Final = {
    name: _StorageType(name, code, out) for name, (code, out) in _STORAGE_SPECS.items()
}


class _TorchDtype(_Frozen):
    """Stand-in for a ``torch.<dtype>`` global appearing in metadata."""

    __slots__ = ("name",)

    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_DTYPE_ALIASES: Final = {
    "float32": "float32", "float": "float32",
    "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64",
    "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool",
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

    def __init__(
        self, key: str, stype: _StorageType, numel: int, reader: Callable[[], np.ndarray]
    ) -> None:
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
                raise CheckpointError(
                    f"storage {self.key!r}: expected {self.numel} elements, read {arr.size}"
                )
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
            raise CheckpointError(
                f"tensor rebuilt from {type(storage).__name__}, expected a storage"
            )
        off = _as_int(offset, "storage offset")
        sz = _as_int_tuple(size, "size")
        st = _as_int_tuple(stride, "stride")
        if len(sz) != len(st):
            raise CheckpointError(f"tensor size {sz} and stride {st} differ in length")
        if off < 0 or any(d < 0 for d in sz) or any(s < 0 for s in st):
            raise CheckpointError(
                f"negative offset/size/stride in tensor (offset={off}, size={sz}, stride={st})"
            )
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
        raise CheckpointError(
            f"tensor {what} must be an integer, got {type(value).__name__}"
        ) from None


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


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any, backward_hooks: Any, state: Any
) -> _TensorRef:
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    if not isinstance(dims, (tuple, list)):
        raise CheckpointError(f"torch.Size expects a tuple, got {type(dims).__name__}")
    return tuple(_as_int(d, "torch.Size entry") for d in dims)


_SAFE_GLOBALS: Final[dict[tuple[str, str], Any]] = {
    # A C type whose attributes cannot be rebound; building one runs no user code.
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _SafeCallable(
        "torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2
    ),
    ("torch._utils", "_rebuild_tensor"): _SafeCallable(
        "torch._utils._rebuild_tensor", _rebuild_tensor
    ),
    ("torch._utils", "_rebuild_parameter"): _SafeCallable(
        "torch._utils._rebuild_parameter", _rebuild_parameter
    ),
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
            raise CheckpointError(
                "checkpoint contains a pickled nn.Module (torch.save(model)); " + _RESAVE_HINT
            )
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


def _check_storage_pid(pid: tuple[Any, ...], n_fields: int) -> tuple[_StorageType, str, int]:
    if len(pid) != n_fields:
        raise CheckpointError(f"storage persistent id has {len(pid)} fields, expected {n_fields}")
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(stype, _StorageType):
        raise CheckpointError(f"unsupported storage type {stype!r}")
    key = _ascii(key)
    _ascii(location)  # device tag such as 'cpu' or 'cuda:0'; data always goes to host
    numel = _as_int(numel, "storage numel")
    if numel < 0:
        raise CheckpointError(f"storage {key!r} has negative size {numel}")
    return stype, key, numel


def _decode_storage(buf: Any, stype: _StorageType, byteorder: str) -> np.ndarray:
    """Decode raw storage bytes into a native-endian array of ``stype.out_dtype``.

    bfloat16 is widened to float32 exactly by placing its 16 bits in the high
    half of a float32 word.
    """
    order = "<" if byteorder == "little" else ">"
    if stype.name == "BoolStorage":
        return np.frombuffer(buf, dtype=np.uint8) != 0
    raw = np.frombuffer(buf, dtype=np.dtype(order + stype.disk_code))
    if stype.name == "BFloat16Storage":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if not raw.dtype.isnative:
        return raw.astype(raw.dtype.newbyteorder("="))
    return raw


# --------------------------------------------------------------------------
# Format readers
# --------------------------------------------------------------------------


def _read_zip(zf: zipfile.ZipFile, path: str) -> Any:
    names = zf.namelist()
    pkls = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    if not pkls:
        raise CheckpointError(
            f"{path}: zip archive without a data.pkl record; not a torch.save checkpoint"
        )
    if len(pkls) > 1:
        raise CheckpointError(f"{path}: zip archive with several data.pkl records: {pkls}")
    prefix = pkls[0][: -len("data.pkl")]
    members = set(names)
    if prefix + "constants.pkl" in members:
        raise CheckpointError(
            f"{path}: this is a TorchScript archive (torch.jit.save), not a state dict; "
            "load it with torch.jit.load and save model.state_dict() with torch.save"
        )

    byteorder = "little"
    if prefix + "byteorder" in members:
        raw = zf.read(prefix + "byteorder").strip()
        if raw not in (b"little", b"big"):
            raise CheckpointError(f"{path}: unknown byteorder record {raw!r}")
        byteorder = raw.decode()

    storages: dict[str, _StorageRef] = {}

    def load_storage(pid: tuple[Any, ...]) -> _StorageRef:
        stype, key, numel = _check_storage_pid(pid, 5)
        ref = storages.get(key)
        if ref is not None:
            if ref.stype is not stype or ref.numel != numel:
                raise CheckpointError(f"storage {key!r} referenced with conflicting types/sizes")
            return ref
        member = f"{prefix}data/{key}"
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise CheckpointError(f"{path}: storage record {member!r} is missing") from None
        if info.file_size != numel * stype.itemsize:
            raise CheckpointError(
                f"{path}: storage record {member!r} holds {info.file_size} bytes, "
                f"expected {numel} x {stype.itemsize}"
            )

        def reader() -> np.ndarray:
            try:
                data = zf.read(member)  # CRC-checked by zipfile
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise CheckpointError(f"{path}: cannot read {member!r}: {exc}") from exc
            return _decode_storage(data, stype, byteorder)

        ref = _StorageRef(key, stype, numel, reader)
        storages[key] = ref
        return ref

    data = zf.read(pkls[0])
    return _unpickle(
        _RestrictedUnpickler(io.BytesIO(data), load_storage), f"{path}: corrupt data.pkl"
    )


def _read_legacy(f: IO[bytes], path: str) -> Any:
    def header(failure: str = f"{path}: corrupt legacy checkpoint header") -> Any:
        return _unpickle(_RestrictedUnpickler(f, None), failure)

    not_checkpoint = (
        f"{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file)"
    )
    magic = header(not_checkpoint)
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{not_checkpoint}: a pickle without the torch.save magic number")
    protocol = header()
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol!r}")
    header()  # sys_info; storages are little-endian whatever the writer was

    roots: dict[str, _StorageRef] = {}
    offsets: dict[str, int] = {}  # root key -> file offset of its first data byte
    views: dict[str, _StorageRef] = {}

    def read_root(key: str, stype: _StorageType, numel: int) -> np.ndarray:
        start = offsets.get(key)
        if start is None:
            raise CheckpointError(f"{path}: storage {key!r} has no data in the file")
        f.seek(start)
        nbytes = numel * stype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{path}: truncated storage {key!r}")
        return _decode_storage(data, stype, "little")

    def load_storage(pid: tuple[Any, ...]) -> _StorageRef:
        stype, key, numel = _check_storage_pid(pid, 6)
        root = roots.get(key)
        if root is None:
            root = _StorageRef(key, stype, numel, lambda: read_root(key, stype, numel))
            roots[key] = root
        elif root.stype is not stype or root.numel != numel:
            raise CheckpointError(f"storage {key!r} referenced with conflicting types/sizes")
        view_meta = pid[5]
        if view_meta is None:
            return root
        if not isinstance(view_meta, tuple) or len(view_meta) != 3:
            raise CheckpointError(f"malformed storage view metadata {view_meta!r}")
        view_key = _ascii(view_meta[0])
        start = _as_int(view_meta[1], "storage view offset")
        length = _as_int(view_meta[2], "storage view size")
        if start < 0 or length < 0 or start + length > numel:
            raise CheckpointError(f"storage view {view_key!r} exceeds storage {key!r}")
        view = views.get(view_key)
        if view is not None and (view.stype is not stype or view.numel != length):
            raise CheckpointError(f"storage view {view_key!r} referenced with conflicting sizes")
        if view is None:
            view = _StorageRef(
                view_key, stype, length, lambda: root.array()[start : start + length]
            )
            views[view_key] = view
        return view

    obj = _unpickle(_RestrictedUnpickler(f, load_storage), f"{path}: corrupt legacy checkpoint")
    keys = header(f"{path}: corrupt legacy storage key list")
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: malformed legacy storage key list")

    end = os.fstat(f.fileno()).st_size
    pos = f.tell()
    for raw_key in keys:
        key = _ascii(raw_key)
        root = roots.get(key)
        if root is None or key in offsets:
            raise CheckpointError(f"{path}: unexpected storage key {key!r} in legacy file")
        f.seek(pos)
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: truncated legacy checkpoint")
        (numel,) = struct.unpack("<q", head)
        if numel != root.numel:
            raise CheckpointError(
                f"{path}: storage {key!r} holds {numel} elements, expected {root.numel}"
            )
        offsets[key] = pos + 8
        pos += 8 + root.nbytes
        if pos > end:
            raise CheckpointError(f"{path}: truncated legacy checkpoint")
    return obj


# --------------------------------------------------------------------------
# State-dict extraction
# --------------------------------------------------------------------------


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
                f"keys {origin[new]!r} and {key!r} both become {new!r} after "
                f"stripping prefixes {prefixes}"
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
                    f"{path_str}: the old tar-based torch.save format is not "
                    f"supported; {_RESAVE_HINT}"
                )
            f.seek(0)
            return _extract(_read_legacy(f, path_str), prefix_tuple)
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path_str}: {exc}") from exc


def _is_tar(f: IO[bytes]) -> bool:
    try:
        with tarfile.open(fileobj=f, mode="r:"):
            return True
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False
