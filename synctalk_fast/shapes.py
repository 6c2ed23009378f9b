"""The shapes, frame rates and crop geometry of the SyncTalk_2D "328" networks.

Every other module takes these facts from here (numerics §1, §3, §5 in
``docs/numerics.md``). A new audio feature mode is one row of :data:`MODE_TABLE`
plus its branch in :mod:`synctalk_fast.models.networks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._filters import N_MELS

__all__ = [
    "Mode",
    "MODE_TABLE",
    "MODES",
    "AUDIO_SHAPES",
    "FPS",
    "CONTEXT",
    "IMAGE_SHAPE",
    "PRED_SHAPE",
    "MEL_WINDOW",
    "MEL_SHAPE",
    "EMBEDDING",
    "ENCODER_BATCH",
    "CROP_SIZE",
    "CROP_BORDER",
]

#: Feature rows one video frame sees: rows ``i - 8 .. i + 7`` (numerics §1.9).
CONTEXT = 16
#: Mel frames per audio encoder window (0.2 s, numerics §1.6).
MEL_WINDOW = 16
#: Audio encoder input of one window: ``[1, 80, 16]``.
MEL_SHAPE = (1, N_MELS, MEL_WINDOW)
#: Audio encoder output per window.
EMBEDDING = 512
#: Encoder windows per call, as the reference runs them (numerics §1.7).
ENCODER_BATCH = 64
#: The crop is resized to ``CROP_SIZE`` square; the network sees its inner
#: ``CROP_SIZE - 2 * CROP_BORDER`` square (numerics §3.1-3.2).
CROP_SIZE = 328
CROP_BORDER = 4
_SIDE = CROP_SIZE - 2 * CROP_BORDER
#: U-Net image input of one frame: [real BGR, masked BGR] x 320 x 320.
IMAGE_SHAPE = (6, _SIDE, _SIDE)
#: U-Net output of one frame: BGR in 0..1.
PRED_SHAPE = (3, _SIDE, _SIDE)


@dataclass(frozen=True)
class Mode:
    """One audio feature mode of the U-Net.

    Attributes
    ----------
    name : str
    audio_shape : (C, H, W)
        The U-Net audio input of one frame.
    fps : int
        Video frame rate of features of this mode.
    """

    name: str
    audio_shape: tuple[int, int, int]
    fps: int

    @property
    def window_size(self) -> int:
        """Floats in one frame's U-Net audio input: C * H * W."""
        c, h, w = self.audio_shape
        return c * h * w

    @property
    def row_size(self) -> int:
        """Floats in one per-frame feature row (a window holds CONTEXT rows)."""
        return self.window_size // CONTEXT


#: Every mode, one row each: ave features come from this package's audio
#: encoder; hubert and wenet rows are precomputed by models outside it.
MODE_TABLE: Mapping[str, Mode] = {
    m.name: m
    for m in (
        Mode("ave", (32, 16, 16), 25),
        Mode("hubert", (32, 32, 32), 25),
        Mode("wenet", (256, 16, 32), 20),
    )
}
#: U-Net audio input shape [C, H, W] per mode.
AUDIO_SHAPES: Mapping[str, tuple[int, int, int]] = {k: m.audio_shape for k, m in MODE_TABLE.items()}
MODES = AUDIO_SHAPES  # the name features.MODES has always had
#: Video frame rate per mode.
FPS: Mapping[str, int] = {k: m.fps for k, m in MODE_TABLE.items()}
