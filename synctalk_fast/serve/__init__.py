"""The live avatar server: speech in over a WebSocket or WebRTC, the person speaking out.

- :mod:`.protocol`: the wire protocol: messages, image formats, refusal codes
  with their close codes and HTTP statuses, the one error message;
- :mod:`.config`: avatars, a session's limits, the avatars TOML file, the binding rule;
- :mod:`.admission`: client checks, admission up to capacity, the metrics, capacity measurement;
- :mod:`.conversation`: the core of a session both transports share (stream, limits, barge-in, metrics);
- :mod:`.websocket`, :mod:`.webrtc`: the two transports;
- :mod:`.app`: :class:`AvatarServer` (avatars and engines, the Starlette application, its routes) and :func:`serve`.
"""

from .app import AvatarServer, serve
from .config import AvatarSpec, Limits, ServerConfig, check_binding, load_config
from .protocol import CLOSE_CODES, FORMATS, REFUSALS, Refusal, encode_image, error_message, parse_start
from .webrtc import VoiceGate, WebRtcSession

__all__ = [
    "AvatarServer",
    "serve",
    "AvatarSpec",
    "Limits",
    "ServerConfig",
    "check_binding",
    "load_config",
    "FORMATS",
    "CLOSE_CODES",
    "REFUSALS",
    "Refusal",
    "error_message",
    "parse_start",
    "encode_image",
    "VoiceGate",
    "WebRtcSession",
]
