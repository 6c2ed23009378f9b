"""A prepared template: the person's frames and landmarks (numerics §2), validated once.

```
TEMPLATE/full_body_img/0.jpg 1.jpg ...   frames (JPEG or PNG)
TEMPLATE/landmarks/0.lms 1.lms ...       110 lines "x y" per frame
```
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import cv2
import numpy as np

from ._util.system import available_memory
from .errors import BoxError, TemplateError
from .frames import Box, crop_box, load_landmarks

__all__ = ["Template", "TemplateLike", "FrameCache", "ping_pong", "LANDMARKS", "available_memory"]

LANDMARKS = 110  # points per .lms file
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def ping_pong(n_template: int, n_frames: int, *, start: int = 0, first: int = 0) -> np.ndarray:
    """Template frame index of each output frame (numerics §2, "Frame order").

    The reference visits 1, 2, ..., N-1, N-2, ..., 0, 1, ...: per output frame
    ``if idx > N-2: step = -1; if idx < 1: step = 1; idx += step`` from idx = 0,
    step = 0. ``start`` is added to the file index, wrapping around the
    template (the reference simply fails past its end). ``first`` is the
    number of the first output frame wanted (a stream continues the sweep).

    Returns
    -------
    np.ndarray
        int64 ``[n_frames]``: the indices of output frames ``first ..
        first + n_frames - 1``.
    """
    if n_template < 1:
        raise TemplateError("a template needs at least one frame")
    if n_template == 1:
        return np.zeros(n_frames, dtype=np.int64)
    period = 2 * (n_template - 1)
    p = (np.arange(first, first + n_frames, dtype=np.int64) + 1) % period
    idx = np.where(p <= n_template - 1, p, period - p)
    return (idx + start) % n_template


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF or a PNG's IHDR header, without decoding."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:2] != b"\xff\xd8":
            return None
        f.seek(2)
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            kind = marker[1]
            if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:  # markers without a length
                continue
            length = struct.unpack(">H", f.read(2))[0]
            if kind in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                _, height, width = struct.unpack(">BHH", f.read(5))
                return width, height
            f.seek(length - 2, os.SEEK_CUR)


def _numbered(folder: Path, exts: tuple[str, ...]) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in exts and p.stem.isdigit():
            files[int(p.stem)] = p
    return files


class FrameCache:
    """Decoded template frames, kept up to ``capacity`` frames.

    The ping-pong order visits every frame once per sweep, so an LRU cache
    smaller than the template would miss every time; this cache keeps the
    first ``capacity`` frames it sees and never evicts, which serves a
    fraction ``capacity / N`` of visits from memory (all of them when the
    template fits). Cached frames are read-only arrays shared by all readers.
    Thread-safe.
    """

    def __init__(self, capacity: int):
        self.capacity = max(0, int(capacity))
        self._frames: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached frames."""
        return sum(f.nbytes for f in list(self._frames.values()))

    def get(self, k: int, load) -> np.ndarray:
        """Frame ``k``: from the cache, else ``load(k)`` (kept while there is room)."""
        frame = self._frames.get(k)
        if frame is not None:
            self.hits += 1
            return frame
        self.misses += 1
        frame = load(k)
        frame.flags.writeable = False
        with self._lock:
            if len(self._frames) < self.capacity:
                self._frames.setdefault(k, frame)
        return frame

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()


class Template:
    """A template folder, loaded and validated once; reusable across calls.

    Checks, each failing with one :class:`TemplateError` line naming the file:
    the two folders exist and are not empty; frames 0..N-1 each have their
    landmarks and vice versa; every ``.lms`` has 110 numeric, finite points;
    all frames have one size; every crop box lies (at least partly) inside
    the frame. Frames themselves are decoded on demand (:meth:`frame`) and
    kept in a :class:`FrameCache`, so a long video decodes each template
    frame once.

    Parameters
    ----------
    folder : str or os.PathLike
    cache_mb : float, optional, keyword-only
        Memory for decoded frames in MiB (0: no cache). Default: a quarter of
        the available memory, at most the whole template (1280x720: 2.6 MiB
        per frame).

    Attributes
    ----------
    folder : Path
    size : (width, height)
        Frame size.
    boxes : np.ndarray
        int64 ``[N, 4]`` crop boxes ``(x0, y0, x1, y1)``, cut to the frame.
    landmarks : np.ndarray
        int32 ``[N, 110, 2]``.
    """

    def __init__(self, folder: str | os.PathLike, *, cache_mb: float | None = None):
        self.folder = Path(folder)
        img_dir, lms_dir = self.folder / "full_body_img", self.folder / "landmarks"
        for d in (img_dir, lms_dir):
            if not d.is_dir():
                raise TemplateError(
                    f"{d}: template folder missing (expected {self.folder}/full_body_img and /landmarks)"
                )
        images, marks = _numbered(img_dir, _IMAGE_EXTS), _numbered(lms_dir, (".lms",))
        if not images:
            raise TemplateError(f"{img_dir}: no frames (expected 0.jpg, 1.jpg, ...)")
        for have, lack, what in ((images, marks, "landmarks/{}.lms"), (marks, images, "full_body_img/{}.jpg")):
            orphans = sorted(set(have) - set(lack))
            if orphans:
                first = have[orphans[0]]
                more = f" (and {len(orphans) - 1} more unpaired)" if len(orphans) > 1 else ""
                raise TemplateError(f"{first}: no matching {what.format(orphans[0])}{more}")
        n = len(images)
        missing = sorted(set(range(n)) - set(images))
        if missing:
            raise TemplateError(f"{img_dir}: frames must be numbered 0..{n - 1}; {missing[0]} is missing")
        self.frame_paths = [images[k] for k in range(n)]
        self.landmark_paths = [marks[k] for k in range(n)]
        sizes = []
        for p in self.frame_paths:
            size = _image_size(p)
            if size is None:
                img = cv2.imread(str(p))
                if img is None:
                    raise TemplateError(f"{p}: not a readable image")
                size = (img.shape[1], img.shape[0])
            sizes.append(size)
        odd = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
        if odd is not None:
            raise TemplateError(
                f"{self.frame_paths[odd]}: frame size {sizes[odd][0]}x{sizes[odd][1]} differs from "
                f"{self.frame_paths[0].name} ({sizes[0][0]}x{sizes[0][1]}); all frames must have one size"
            )
        self.size = sizes[0]
        self.landmarks = np.stack([load_landmarks(p, points=LANDMARKS) for p in self.landmark_paths])
        shape = (self.size[1], self.size[0])
        boxes = []
        for p, lms in zip(self.landmark_paths, self.landmarks):
            try:
                boxes.append(crop_box(lms, frame_shape=shape))
            except BoxError as exc:
                raise BoxError(f"{p}: {exc}") from None
        self.boxes = np.array(boxes, dtype=np.int64)
        frame_bytes = self.size[0] * self.size[1] * 3
        if cache_mb is None:
            budget = (available_memory() or 2**30) // 4
        else:
            if not cache_mb >= 0:
                raise ValueError(f"cache_mb must be >= 0, got {cache_mb!r}")
            budget = int(cache_mb * 2**20)
        self.cache = FrameCache(min(n, budget // frame_bytes))

    def __len__(self) -> int:
        return len(self.frame_paths)

    def __repr__(self) -> str:
        return (
            f"Template({str(self.folder)!r}, frames={len(self)}, size={self.size[0]}x{self.size[1]}, "
            f"cached={len(self.cache)}/{self.cache.capacity})"
        )

    def box(self, k: int) -> Box:
        """Crop box of frame ``k`` as ``(x0, y0, x1, y1)`` ints."""
        return tuple(int(v) for v in self.boxes[k])  # type: ignore[return-value]

    def frame(self, k: int, *, copy: bool = True) -> np.ndarray:
        """Frame ``k`` decoded: BGR uint8 ``[H, W, 3]``.

        ``copy=False`` returns the cache's read-only array (no copy).
        """
        frame = self.cache.get(int(k), self._decode)
        return frame.copy() if copy else frame

    def _decode(self, k: int) -> np.ndarray:
        path = self.frame_paths[k]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise TemplateError(f"{path}: cannot decode image")
        if (img.shape[1], img.shape[0]) != self.size:
            raise TemplateError(
                f"{path}: decoded size {img.shape[1]}x{img.shape[0]} differs from {self.size[0]}x{self.size[1]}"
            )
        return img

    def order(self, n_frames: int, *, start: int = 0, first: int = 0) -> np.ndarray:
        """Template index of each of ``n_frames`` output frames from number
        ``first`` on (:func:`ping_pong`)."""
        return ping_pong(len(self), n_frames, start=start, first=first)

    def frames(self, n_frames: int, *, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(template index, decoded frame) for each output frame, in order."""
        for k in self.order(n_frames, start=start):
            yield int(k), self.frame(int(k))


#: What the API accepts as a template: a :class:`Template`, or its folder.
TemplateLike: TypeAlias = Template | str | os.PathLike[str]
