"""The former module of the server's WebRTC sessions; it is now :mod:`synctalk_fast.serve.webrtc`."""

from .serve.webrtc import VoiceGate, WebRtcSession, available

__all__ = ["VoiceGate", "WebRtcSession", "available"]
