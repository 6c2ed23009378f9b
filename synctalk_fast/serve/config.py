"""What a server is configured with: its avatars, a session's limits, the
avatars TOML file and the rule for listening beyond this machine.

Frozen values and pure functions: no state, no threads. The engine options
of a config file are :class:`~synctalk_fast.engine.EngineOptions` fields
(every field is a key), never listed here.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from ..engine.options import OPTION_NAMES, EngineOptions

__all__ = ["AvatarSpec", "Limits", "ServerConfig", "MaxClients", "load_config", "check_binding", "check_max_clients"]

#: Client connections open at once: "auto" (what the machine sustains at real time) or a number.
MaxClients: TypeAlias = Literal["auto"] | int


@dataclass(frozen=True)
class AvatarSpec:
    """One avatar: a name clients use, its template folder and its U-Net file."""

    name: str
    template: Path
    unet: Path

    @classmethod
    def parse(cls, text: str) -> AvatarSpec:
        """``NAME=TEMPLATE_DIR:UNET.onnx`` (the command line's ``--avatar``).

        Raises
        ------
        ValueError
            Not of that form (one line saying the form).
        """
        name, sep, rest = text.partition("=")
        template, colon, unet = rest.rpartition(":")
        if not (sep and colon and name.strip() and template and unet):
            raise ValueError(f"--avatar {text!r}: expected NAME=TEMPLATE_DIR:UNET.onnx")
        return cls(name.strip(), Path(template), Path(unet))


@dataclass(frozen=True)
class Limits:
    """What one session may do; every transport applies them alike.

    Attributes
    ----------
    max_message_bytes : int
        Largest WebSocket message or WebRTC offer accepted (larger closes
        the socket, 1009; an offer: ``too_large``).
    max_audio_rate : float
        Audio faster than this many times real time, over ``audio_burst``
        seconds, is refused (``rate_limited``).
    audio_burst : float
        Seconds of audio a client may send ahead at once.
    max_session_seconds : float
        Longest session (``session_too_long``).
    idle_seconds : float
        A session with no message (WebRTC: no microphone audio and no data
        channel message) for this long is closed (``idle_timeout``).
    start_timeout : float
        Seconds to send the ``start`` message (WebSocket).
    send_queue : int
        Frames waiting for a slow client, at most; more are dropped and counted.
    """

    max_message_bytes: int = 1 << 20
    max_audio_rate: float = 4.0
    audio_burst: float = 10.0
    max_session_seconds: float = 3600.0
    idle_seconds: float = 300.0
    start_timeout: float = 10.0
    send_queue: int = 50


def check_max_clients(value: Any, *, where: str = "max_clients") -> MaxClients:
    """``value`` as a :data:`MaxClients`: "auto" or an integer >= 1 (a string of digits is converted).

    Raises
    ------
    ValueError
        Anything else (one line).
    """
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be 'auto' or an integer >= 1, got {value!r}")
    return value


def check_binding(host: str, *, token: str | None, insecure: bool = False) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises
    ------
    ValueError
        ``host`` is not a loopback address, no token is set and ``insecure``
        was not given on purpose.
    """
    if token or insecure:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"listening on {host} needs a token (--token-file); to serve without one on purpose, add --insecure"
        )


@dataclass(frozen=True)
class ServerConfig:
    """An avatars TOML file (:func:`load_config`); None: the file does not say.

    Attributes
    ----------
    avatars : list of AvatarSpec
    audio_encoder, token_file : Path or None
        Resolved against the file's folder.
    host : str or None
    port : int or None
    max_clients : "auto", int or None
    insecure : bool or None
    allowed_origins : list of str
    options : EngineOptions
        The file's engine options over the defaults.
    engine_keys : frozenset of str
        The option names the file gave (what a command-line flag may override
        and a default may not).
    """

    avatars: list[AvatarSpec] = field(default_factory=list)
    audio_encoder: Path | None = None
    host: str | None = None
    port: int | None = None
    max_clients: MaxClients | None = None
    token_file: Path | None = None
    insecure: bool | None = None
    allowed_origins: list[str] = field(default_factory=list)
    options: EngineOptions = field(default_factory=EngineOptions)
    engine_keys: frozenset[str] = frozenset()

    def __getitem__(self, key: str) -> Any:
        """The old dict form: ``config["avatars"]``, ``config["port"]``, an option
        the file gave (``KeyError`` for what it did not)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The old dict form's ``get``: what the file gave for ``key``, else ``default``."""
        if key == "max_sessions":
            key = "max_clients"
        if key in OPTION_NAMES:
            return getattr(self.options, key) if key in self.engine_keys else default
        if key in _SERVER_KEYS or key == "avatars":
            value = getattr(self, key)
            return default if value is None or (key == "allowed_origins" and not value) else value
        return default


_MISSING = object()
#: The file's server keys -> their type (paths are resolved against the file's folder).
_SERVER_KEYS: dict[str, type] = {
    "audio_encoder": Path,
    "host": str,
    "port": int,
    "max_clients": object,
    "token_file": Path,
    "insecure": bool,
    "allowed_origins": list,
}
_DEPRECATED_KEYS = {"max_sessions": "max_clients"}


def _server_value(path: Path, key: str, value: Any) -> Any:
    """One server key's value, checked and converted (paths resolved)."""
    kind = _SERVER_KEYS[key]
    if key == "max_clients":
        return check_max_clients(value, where=f"{path}: max_clients")
    if kind is Path:
        kind = str
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if key == "allowed_origins":
        ok = ok and all(isinstance(o, str) for o in value)
    if not ok:
        raise ValueError(
            f"{path}: {key} must be {'a list of strings' if kind is list else 'a ' + kind.__name__}, got {value!r}"
        )
    return path.parent / value if _SERVER_KEYS[key] is Path else value


def _avatars(path: Path, tables: Any) -> list[AvatarSpec]:
    if not isinstance(tables, list):
        raise ValueError(f"{path}: avatar must be [[avatar]] tables")
    avatars = []
    for k, table in enumerate(tables, 1):
        if not isinstance(table, dict) or set(table) != {"name", "template", "unet"}:
            keys = ", ".join(table) if isinstance(table, dict) else repr(table)
            raise ValueError(f"{path}: avatar {k} needs exactly name, template and unet (got {keys})")
        avatars.append(AvatarSpec(str(table["name"]), path.parent / table["template"], path.parent / table["unet"]))
    return avatars


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read an avatars TOML file: top-level server options (``audio_encoder``,
    ``host``, ``port``, ``max_clients``, ``token_file``, ``insecure``,
    ``allowed_origins``), engine options (every
    :class:`~synctalk_fast.engine.EngineOptions` field by name) and
    ``[[avatar]]`` tables with ``name``, ``template``, ``unet``; relative
    paths resolve against the file's folder. The old key ``max_sessions``
    is read as ``max_clients`` (DeprecationWarning).

    Raises
    ------
    ValueError
        Unreadable TOML, an avatar without its three keys, an unknown key
        (the message lists the known ones), a value of the wrong type.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    known = {"avatar", *_SERVER_KEYS, *OPTION_NAMES}
    unknown = sorted(set(data) - known - set(_DEPRECATED_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    for old, new in _DEPRECATED_KEYS.items():
        if old in data:
            if new in data:
                raise ValueError(f"{path}: give {new} only (the old key {old} is its former name)")
            warnings.warn(f"{path}: the key {old} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
            data[new] = data.pop(old)
    server = {key: _server_value(path, key, value) for key, value in data.items() if key in _SERVER_KEYS}
    engine_keys = frozenset(k for k in data if k in OPTION_NAMES)
    options = EngineOptions.from_mapping(data, source=str(path))
    return ServerConfig(
        avatars=_avatars(path, data.get("avatar", [])), options=options, engine_keys=engine_keys, **server
    )
