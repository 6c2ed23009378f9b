"""The frame-folder sink: numbered PNG / JPEG images, moved into place at close.

:class:`FrameFolderSink` writes into a hidden sibling folder and moves the
images into the destination only when :meth:`FrameFolderSink.close`
succeeds (see :mod:`~synctalk_fast.sinks.base` for the no-partial-output invariant). Not
thread-safe.
"""

from __future__ import annotations

import os
import re
import shutil
import weakref
from pathlib import Path

import cv2
import numpy as np

from .._util.atomic import PartFile, make_dirs, part_name, remove_dirs
from .base import _check_frame, _output_error, _Writer

__all__ = ["FrameFolderSink"]

_FRAME_NAME = re.compile(r"frame_\d+\.(?:png|jpg)")


class _FolderPart:
    """The temporary sibling folder of a :class:`FrameFolderSink`: no reference to the sink."""

    def __init__(self, folder: Path, created: list[Path]):
        self.folder = folder
        self.created = created

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        remove_dirs(self.created)


class FrameFolderSink(_Writer):
    """Frames as numbered images: ``frame_00000.png`` (or ``.jpg``) in a folder.

    Images are written into a hidden sibling folder (``.<name>.<random>.part``)
    and moved into ``folder`` at :meth:`close`. Afterwards ``folder`` holds
    exactly this run's ``frame_NNNNN.<ext>`` files: ``frame_<digits>.png`` /
    ``.jpg`` files left by an earlier run are removed; other files stay.

    Parameters
    ----------
    folder : str or os.PathLike
        Destination folder, created at :meth:`close` if missing (its missing
        parents are created at once, to check they can be).
    ext : {"png", "jpg"}, default "png"
        Image format (``"jpeg"`` and a leading dot are accepted). PNG is
        lossless.
    jpeg_quality : int, default 95
        JPEG quality 0..100 (ignored for PNG).

    Notes
    -----
    Names have at least five digits (``frame_100000`` follows
    ``frame_99999``). When ``folder`` does not exist, it appears in one
    rename; otherwise the images are renamed into it one by one (renames
    write no data, and both folders are checked writable at construction),
    so only a crash or a rename failing midway through :meth:`close` can
    leave a mix of old and new frames.
    """

    def __init__(self, folder: str | os.PathLike[str], *, ext: str = "png", jpeg_quality: int = 95):
        self._dest = Path(os.fspath(folder))
        e = str(ext).lower().lstrip(".")
        e = "jpg" if e == "jpeg" else e
        if e not in ("png", "jpg"):
            raise ValueError(f"ext must be 'png' or 'jpg', got {ext!r}")
        if (
            isinstance(jpeg_quality, bool)
            or not isinstance(jpeg_quality, (int, np.integer))
            or not 0 <= jpeg_quality <= 100
        ):
            raise ValueError(f"jpeg_quality must be an integer in 0..100, got {jpeg_quality!r}")
        self._ext = e
        self._params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if e == "jpg" else []
        dest = self._dest
        try:
            if os.path.lexists(dest) and not dest.is_dir():
                raise NotADirectoryError(20, os.strerror(20), os.fspath(dest))
            created = make_dirs(dest.parent)
            try:
                tmp = self._make_temp_folder(dest)
            except BaseException:
                remove_dirs(created)
                raise
        except OSError as exc:
            raise _output_error(dest, exc) from exc
        part = _FolderPart(tmp, created)
        self._part = part
        self._discard = weakref.finalize(self, part.discard)
        try:  # close() must be able to write in both folders
            for where in (tmp, dest) if dest.is_dir() else (tmp,):
                probe = PartFile.create_in(where, dest)
                probe.close()
                os.unlink(probe.path)
        except BaseException as exc:
            raise self._fail(exc) from exc

    @staticmethod
    def _make_temp_folder(dest: Path) -> Path:
        while True:
            tmp = dest.parent / part_name(dest)
            try:
                os.mkdir(tmp)
                return tmp
            except FileExistsError:
                continue

    def _name(self, index: int) -> str:
        return f"frame_{index:05d}.{self._ext}"

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Write one BGR uint8 ``[H, W, 3]`` frame as the next image.

        ``audio`` is ignored (images have no sound); it is accepted so that
        this is a :class:`~synctalk_fast.sinks.Sink`.

        Raises
        ------
        ValueError
            Wrong dtype or shape, a size other than the first frame's, or the
            sink is closed. The sink stays usable after a bad frame.
        OutputError
            Encoding or writing the image failed; the sink is aborted.
        """
        self._check_open()
        frame = _check_frame(frame, self._shape)
        name = self._name(self._frames)
        try:
            ok, buf = cv2.imencode("." + self._ext, frame, self._params)
            if not ok:
                raise OSError(f"cannot encode {name} as {self._ext.upper()}")
            file = PartFile(self._part.folder / name)
            try:
                file.write(buf)
            finally:
                file.close()
        except BaseException as exc:
            raise self._fail(exc) from exc
        self._shape = frame.shape
        self._frames += 1

    def close(self) -> Path:
        """Move the images into ``folder`` (created if needed) and remove stale frames.

        Returns
        -------
        Path
            ``folder``. Calling again after success returns it again.

        Raises
        ------
        OutputError
            The images cannot be moved into ``folder``; the temporary folder
            is deleted.
        ValueError
            The sink was aborted.
        """
        if self._closed:
            return self._dest
        self._check_open()
        part, dest = self._part, self._dest
        try:
            if not os.path.lexists(dest):
                os.rename(part.folder, dest)
            else:
                if not dest.is_dir():
                    raise NotADirectoryError(20, os.strerror(20), os.fspath(dest))
                new = {self._name(i) for i in range(self._frames)}
                for name in sorted(new):
                    os.replace(part.folder / name, dest / name)
                for entry in os.scandir(dest):
                    if _FRAME_NAME.fullmatch(entry.name) and entry.name not in new and not entry.is_dir():
                        os.unlink(entry.path)
                os.rmdir(part.folder)
        except BaseException as exc:
            raise self._fail(exc) from exc
        self._closed = True
        self._discard.detach()
        return dest
