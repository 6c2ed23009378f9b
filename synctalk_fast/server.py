"""The former module of the live server; it is now the package :mod:`synctalk_fast.serve`."""

from .serve import (
    CLOSE_CODES,
    FORMATS,
    AvatarServer,
    AvatarSpec,
    Limits,
    ServerConfig,
    check_binding,
    load_config,
    serve,
)
from .serve.protocol import encode_image, parse_start

__all__ = [
    "AvatarSpec",
    "Limits",
    "AvatarServer",
    "ServerConfig",
    "check_binding",
    "load_config",
    "serve",
    "FORMATS",
    "CLOSE_CODES",
    "encode_image",
    "parse_start",
]
