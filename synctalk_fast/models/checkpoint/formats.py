"""The two container formats of ``torch.save``: the zip archive and the legacy stream of pickles.

Each reader returns the unpickled object with its tensors as
:class:`~.unpickle._TensorRef` stand-ins whose storages are checked against
the file's size before anything is read.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
from typing import IO, Any, Final

import numpy as np

from ...errors import CheckpointError
from .unpickle import _as_int, _ascii, _RestrictedUnpickler, _StorageRef, _StorageType, _unpickle

_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL: Final = 1001


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
        raise CheckpointError(f"{path}: zip archive without a data.pkl record; not a torch.save checkpoint")
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
                f"{path}: storage record {member!r} holds {info.file_size} bytes, expected {numel} x {stype.itemsize}"
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
    return _unpickle(_RestrictedUnpickler(io.BytesIO(data), load_storage), f"{path}: corrupt data.pkl")


class _LegacyStorages:
    """The storages of a legacy file: referenced while its object is
    unpickled, located after it (a key list, then each storage's element
    count and raw bytes), read on first use."""

    def __init__(self, f: IO[bytes], path: str) -> None:
        self.f, self.path = f, path
        self.roots: dict[str, _StorageRef] = {}
        self.offsets: dict[str, int] = {}  # root key -> file offset of its first data byte
        self.views: dict[str, _StorageRef] = {}

    def read_root(self, key: str, stype: _StorageType, numel: int) -> np.ndarray:
        start = self.offsets.get(key)
        if start is None:
            raise CheckpointError(f"{self.path}: storage {key!r} has no data in the file")
        self.f.seek(start)
        nbytes = numel * stype.itemsize
        data = self.f.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{self.path}: truncated storage {key!r}")
        return _decode_storage(data, stype, "little")

    def load(self, pid: tuple[Any, ...]) -> _StorageRef:
        """The unpickler's persistent_load: a root storage or a view of one."""
        stype, key, numel = _check_storage_pid(pid, 6)
        root = self.roots.get(key)
        if root is None:
            root = _StorageRef(key, stype, numel, lambda: self.read_root(key, stype, numel))
            self.roots[key] = root
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
        view = self.views.get(view_key)
        if view is not None and (view.stype is not stype or view.numel != length):
            raise CheckpointError(f"storage view {view_key!r} referenced with conflicting sizes")
        if view is None:
            view = _StorageRef(view_key, stype, length, lambda: root.array()[start : start + length])
            self.views[view_key] = view
        return view

    def locate(self, keys: list[Any]) -> None:
        """Record where each storage's bytes are, checking counts and sizes against the file."""
        path, f = self.path, self.f
        end = os.fstat(f.fileno()).st_size
        pos = f.tell()
        for raw_key in keys:
            key = _ascii(raw_key)
            root = self.roots.get(key)
            if root is None or key in self.offsets:
                raise CheckpointError(f"{path}: unexpected storage key {key!r} in legacy file")
            f.seek(pos)
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: truncated legacy checkpoint")
            (numel,) = struct.unpack("<q", head)
            if numel != root.numel:
                raise CheckpointError(f"{path}: storage {key!r} holds {numel} elements, expected {root.numel}")
            self.offsets[key] = pos + 8
            pos += 8 + root.nbytes
            if pos > end:
                raise CheckpointError(f"{path}: truncated legacy checkpoint")


def _read_legacy(f: IO[bytes], path: str) -> Any:
    def header(failure: str = f"{path}: corrupt legacy checkpoint header") -> Any:
        return _unpickle(_RestrictedUnpickler(f, None), failure)

    not_checkpoint = f"{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file)"
    magic = header(not_checkpoint)
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{not_checkpoint}: a pickle without the torch.save magic number")
    protocol = header()
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol!r}")
    header()  # sys_info; storages are little-endian whatever the writer was
    storages = _LegacyStorages(f, path)
    obj = _unpickle(_RestrictedUnpickler(f, storages.load), f"{path}: corrupt legacy checkpoint")
    keys = header(f"{path}: corrupt legacy storage key list")
    if not isinstance(keys, list):
        raise CheckpointError(f"{path}: malformed legacy storage key list")
    storages.locate(keys)
    return obj


# --------------------------------------------------------------------------
# State-dict extraction
# --------------------------------------------------------------------------


def _is_tar(f: IO[bytes]) -> bool:
    try:
        with tarfile.open(fileobj=f, mode="r:"):
            return True
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False
