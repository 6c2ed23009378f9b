"""Atomic files: output appears complete at its path, or not at all.

Everything the package writes goes through here. A file is built under a
hidden temporary name beside its destination (``.<name>.<8 hex digits>.part``,
same directory, so same file system) and renamed onto the destination with
``os.replace`` only once it is complete and fsynced. On failure the temporary
file and any parent directories created for it are deleted, so the
destination is either the complete new file or exactly what it was before.

- :class:`PartFile`: the temporary file itself, written through a file-like
  object (PyAV writes MP4s into one).
- :func:`write_atomic`: bytes already in memory.
- :func:`atomic_path`: tools that write by file name (``onnx.save``,
  onnxruntime's ``quantize_static``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["PartFile", "part_name", "make_dirs", "remove_dirs", "write_atomic", "atomic_path", "PART_SUFFIX"]

# The temporary output is "<dir>/.<name>.<8 hex digits>.part".
PART_SUFFIX = ".part"


def part_name(dest: Path) -> str:
    """A fresh hidden temporary name for ``dest``: ``.<name>.<8 hex digits>.part``."""
    return f".{dest.name}.{secrets.token_hex(4)}{PART_SUFFIX}"


def make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing ancestors.

    Returns
    -------
    list of Path
        The directories created, deepest first (what :func:`remove_dirs`
        takes); empty when ``directory`` existed.

    Raises
    ------
    OSError
        A directory cannot be created, or a path component is not a
        directory (``NotADirectoryError``). Nothing created stays behind.
    """
    missing: list[Path] = []
    d = directory
    while not os.path.lexists(d):
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not d.is_dir():
                    raise
                continue
            created.append(d)
    except BaseException:
        remove_dirs(created[::-1])
        raise
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(directory))
    return created[::-1]


def remove_dirs(created: list[Path]) -> None:
    """Remove directories :func:`make_dirs` created (deepest first), where still empty.

    Stops at the first that cannot be removed (its ancestors are then not
    empty either).
    """
    for d in created:
        try:
            os.rmdir(d)
        except OSError:
            return


class PartFile:
    """A newly created (exclusive) file; every byte of output goes through :meth:`write`.

    PyAV is handed this object as a seekable file, so disk errors surface as
    ``OSError`` with their errno, and tests can monkeypatch ``write``.

    Parameters
    ----------
    path : Path
        The file to create; ``FileExistsError`` if anything is there.
    """

    def __init__(self, path: Path):
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        self.path = path
        self._fd = os.open(path, flags, 0o666)  # the umask applies, as for any new file

    @classmethod
    def create_in(cls, directory: Path, dest: Path) -> PartFile:
        """A new hidden temporary file for ``dest`` in ``directory`` (named by :func:`part_name`)."""
        while True:
            try:
                return cls(directory / part_name(dest))
            except FileExistsError:
                continue

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def write(self, data: Any) -> int:
        """Write all of ``data`` (any buffer); return its length in bytes."""
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):  # os.write may write less than asked
            done += os.write(self._fd, view[done:])
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def sync(self) -> None:
        """Flush the file's data to the disk (``fsync``)."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the descriptor; the file stays where it is. Idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _discard(path: Path, created: list[Path]) -> None:
    """Delete the temporary ``path`` (file or folder, if there) and the parents created for it."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass
    remove_dirs(created)


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a :class:`PartFile` beside ``path``, are fsynced, and the
    file is renamed onto ``path`` (replacing a file there). Missing parent
    directories are created.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    data : bytes
        The whole content (any bytes-like object).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        Whatever creating, writing or renaming raised, unchanged. On any
        exception (``KeyboardInterrupt`` included) the temporary file and
        the parents created for it are deleted; a previous file at ``path``
        is untouched.
    """
    dest = Path(os.fspath(path))
    created = make_dirs(dest.parent)
    file: PartFile | None = None
    try:
        file = PartFile.create_in(dest.parent, dest)
        file.write(data)
        file.sync()
        file.close()
        os.replace(file.path, dest)
    except BaseException:
        if file is not None:
            try:
                file.close()
            except OSError:
                pass
            _discard(file.path, created)
        else:
            remove_dirs(created)
        raise
    return dest


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` for a tool that writes by file name.

    Yields a hidden name in ``path``'s directory (``.<name>.<8 hex>.part``)
    that does not exist yet; the tool writes the file there. On normal exit
    the file is fsynced and renamed onto ``path`` (replacing a file there);
    on an exception it is deleted instead. Missing parent directories are
    created, and removed again when nothing is written.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.

    Yields
    ------
    Path
        Where the tool must write.

    Raises
    ------
    FileNotFoundError
        The block exited normally but nothing was written at the yielded
        path; the message names ``path``.
    OSError
        Syncing or renaming failed (the temporary file is deleted).

    Examples
    --------
    >>> with atomic_path("model.onnx") as tmp:  # doctest: +SKIP
    ...     onnx.save(model, tmp)
    """
    dest = Path(os.fspath(path))
    created = make_dirs(dest.parent)
    tmp = dest.parent / part_name(dest)
    while os.path.lexists(tmp):
        tmp = dest.parent / part_name(dest)
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(errno.ENOENT, "nothing was written", os.fspath(dest))
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        _discard(tmp, created)
        raise
