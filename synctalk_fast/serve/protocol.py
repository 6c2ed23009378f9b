"""The server's wire protocol: message shapes, image formats and refusals.

WebSocket protocol, ``/v1/avatars/{name}/stream`` (a fixed contract):

- client -> server, text: ``{"type": "start", "sample_rate": 16000,
  "channels": 1, "format": "jpeg"}`` first (``format``: ``jpeg``, ``png``
  (lossless) or ``raw`` (BGR24 bytes, height x width x 3); optional
  ``"idle": true``, ``"max_lag": 0.5``, ``"start": 0``), then ``{"type":
  "flush"}`` (end of an utterance), ``{"type": "interrupt"}`` (barge-in),
  ``{"type": "close"}``;
- client -> server, binary: little-endian int16 PCM at the announced rate,
  interleaved when ``channels`` is 2, any chunk size;
- server -> client: per frame a text message ``{"type": "frame", "index",
  "time", "utterance", "idle", "skipped", "width", "height", "format"}``
  immediately followed by one binary message with the image; after the
  last frame of a flushed utterance ``{"type": "utterance_end",
  "utterance", "frames"}``; on a problem ``{"type": "error", "code",
  "message"}`` (:func:`error_message`), then the socket closes if the
  session cannot go on, with the code's WebSocket close code
  (:data:`REFUSALS`).

The HTTP routes refuse with the same error message as body (plus
``"error": code``, the key those routes have always had) and the code's
HTTP status; WebRTC sessions send it over their data channel before
closing.

Every refusal code is in :data:`REFUSALS` once, with its close code and
HTTP status; :class:`Refusal` carries one through the server. Pure
functions and constants: no state, no threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..stream import StreamFrame

__all__ = [
    "FORMATS",
    "REFUSALS",
    "CLOSE_CODES",
    "RefusalKind",
    "Refusal",
    "Start",
    "parse_start",
    "error_message",
    "frame_header",
    "utterance_end",
    "encode_image",
]

#: Image formats a client may ask for -> OpenCV's encoder suffix (None: raw BGR24 bytes).
FORMATS: dict[str, str | None] = {"jpeg": ".jpg", "png": ".png", "raw": None}
JPEG_QUALITY = 90
START_KEYS = frozenset({"type", "sample_rate", "channels", "format", "idle", "max_lag", "start"})


@dataclass(frozen=True)
class RefusalKind:
    """What a refusal code does: the WebSocket close code (None: the session
    goes on) and the HTTP status of a refused request."""

    close: int | None
    http: int


#: Every error code the server sends -> its close code and HTTP status.
REFUSALS: dict[str, RefusalKind] = {
    "bad_request": RefusalKind(1008, 400),
    "unauthorized": RefusalKind(1008, 401),
    "forbidden_origin": RefusalKind(1008, 403),
    "unknown_avatar": RefusalKind(1008, 404),
    "too_large": RefusalKind(1009, 413),
    "rate_limited": RefusalKind(1008, 429),
    "idle_timeout": RefusalKind(1008, 408),
    "session_too_long": RefusalKind(1008, 408),
    "server_full": RefusalKind(1013, 503),
    "internal": RefusalKind(1011, 500),
    "unavailable": RefusalKind(1011, 501),
    "too_short": RefusalKind(None, 422),  # a flushed utterance that made no frame: the session goes on
}
#: Why a socket closes -> its WebSocket close code (from :data:`REFUSALS`).
CLOSE_CODES: dict[str, int] = {code: kind.close for code, kind in REFUSALS.items() if kind.close is not None}


class Refusal(Exception):
    """A request or session the server refuses: its code (a key of
    :data:`REFUSALS`) and a one-line message."""

    def __init__(self, code: str, message: str):
        if code not in REFUSALS:
            raise ValueError(f"unknown refusal code {code!r}")
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self)

    @property
    def close_code(self) -> int:
        """The WebSocket close code (1011 for a code that does not close)."""
        return REFUSALS[self.code].close or 1011

    @property
    def http_status(self) -> int:
        return REFUSALS[self.code].http

    def to_message(self) -> dict[str, str]:
        """The error message of this refusal (:func:`error_message`)."""
        return error_message(self.code, self.message)

    def http_body(self) -> dict[str, str]:
        """The body of an HTTP refusal: the error message, with the code also
        under ``"error"`` (the key the HTTP routes have always had)."""
        return {**self.to_message(), "error": self.code}

    @classmethod
    def internal(cls, exc: BaseException) -> Refusal:
        """An internal fault as a refusal: the exception's text on one line (300
        characters at most), or its type's name."""
        return cls("internal", " ".join(str(exc).split())[:300] or type(exc).__name__)


def error_message(code: str, message: str) -> dict[str, str]:
    """The one error message of the protocol: ``{"type": "error", "code", "message"}``."""
    return {"type": "error", "code": code, "message": message}


@dataclass(frozen=True)
class Start:
    """A validated start message (defaults filled in)."""

    sample_rate: int = 16000
    channels: int = 1
    format: str = "jpeg"
    idle: bool = False
    max_lag: float | None = None
    start: int = 0

    @property
    def bytes_per_second(self) -> int:
        """Bytes of int16 PCM per second of audio."""
        return 2 * self.channels * self.sample_rate


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_start(msg: dict[str, Any]) -> None:
    """Raise ``bad_request`` for the first field of ``msg`` that is out of its range."""
    rate, channels, fmt = msg.get("sample_rate", 16000), msg.get("channels", 1), msg.get("format", "jpeg")
    idle, lag, first = msg.get("idle", False), msg.get("max_lag"), msg.get("start", 0)
    checks = [
        (_is_int(rate) and 8000 <= rate <= 192000, f"sample_rate must be an integer in 8000..192000, got {rate!r}"),
        (_is_int(channels) and channels in (1, 2), f"channels must be 1 or 2, got {channels!r}"),
        (isinstance(fmt, str) and fmt in FORMATS, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}"),
        (isinstance(idle, bool), f"idle must be true or false, got {idle!r}"),
        (
            lag is None or (isinstance(lag, (int, float)) and not isinstance(lag, bool) and 0 <= lag <= 60),
            f"max_lag must be seconds in 0..60, got {lag!r}",
        ),
        (_is_int(first) and first >= 0, f"start must be a template frame number >= 0, got {first!r}"),
    ]
    for ok, reason in checks:
        if not ok:
            raise Refusal("bad_request", reason)


def parse_start(text: str) -> Start:
    """The validated start message, with defaults filled in.

    Raises
    ------
    Refusal
        ``bad_request`` with a one-line reason.
    """
    try:
        msg = json.loads(text)
    except ValueError:
        raise Refusal("bad_request", "the start message is not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") != "start":
        raise Refusal("bad_request", 'the first message must be {"type": "start", ...}')
    unknown = sorted(set(msg) - START_KEYS)
    if unknown:
        raise Refusal("bad_request", f"unknown start key(s): {', '.join(unknown)}")
    _check_start(msg)
    return Start(**{k: v for k, v in msg.items() if k != "type"})


def frame_header(f: StreamFrame, fmt: str) -> dict[str, Any]:
    """The text message announcing frame ``f`` (its image follows as one binary message)."""
    h, w = f.image.shape[:2]
    return {
        "type": "frame",
        "index": f.index,
        "time": round(f.time, 6),
        "utterance": f.utterance,
        "idle": f.idle,
        "skipped": f.skipped,
        "width": w,
        "height": h,
        "format": fmt,
    }


def utterance_end(f: StreamFrame) -> dict[str, Any]:
    """The message after ``f``, the last frame of a flushed utterance."""
    return {"type": "utterance_end", "utterance": f.utterance, "frames": f.frame + 1}


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """A BGR uint8 ``[H, W, 3]`` frame as the client asked (see :data:`FORMATS`).

    Raises
    ------
    RuntimeError
        OpenCV could not encode the image.
    """
    suffix = FORMATS[fmt]
    if suffix is None:
        return np.ascontiguousarray(image).tobytes()
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, data = cv2.imencode(suffix, image, params)
    if not ok:
        raise RuntimeError(f"{fmt} encoding failed")
    return data.tobytes()
