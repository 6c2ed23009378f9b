"""``synctalk-fast serve``: avatars served live over WebSocket (and WebRTC).

Precedence of every setting: a flag given on the command line beats the
config file (``--config``), which beats the default. The server (Starlette,
uvicorn, aiortc) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from ..engine import EngineOptions
from ..engine.options import add_arguments
from .common import DEFAULT_ENCODER

__all__ = ["add_parser", "run"]

T = TypeVar("T")


def _pick(given: T | None, from_file: T | None, default: T) -> T:
    """The command line's value, else the config file's, else the default."""
    if given is not None:
        return given
    return from_file if from_file is not None else default


def run(args: argparse.Namespace) -> int:
    """Load the avatars, check the binding and serve until interrupted."""
    from ..serve import AvatarServer, AvatarSpec, ServerConfig, check_binding, load_config, serve
    from ..serve.config import check_max_clients

    conf = load_config(args.config) if args.config else ServerConfig()
    avatars = list(conf.avatars) + [AvatarSpec.parse(a) for a in args.avatar]
    if not avatars:
        raise ValueError("give at least one --avatar NAME=TEMPLATE_DIR:UNET.onnx (or --config)")
    host = _pick(args.host, conf.host, "127.0.0.1")
    port = _pick(args.port, conf.port, 8000)
    token_file = args.token_file or conf.token_file
    token = Path(token_file).read_text().strip() if token_file else None
    if token_file and not token:
        raise ValueError(f"{token_file}: the token file is empty")
    check_binding(host, token=token, insecure=args.insecure or bool(conf.insecure))
    given = None if args.max_clients is None else check_max_clients(args.max_clients, where="--max-clients")
    server = AvatarServer(
        avatars,
        _pick(args.audio_encoder, conf.audio_encoder, DEFAULT_ENCODER),
        options=EngineOptions.from_args(args, base=conf.options),
        max_clients=_pick(given, conf.max_clients, "auto"),
        token=token,
        allowed_origins=args.allowed_origin + list(conf.allowed_origins),
    )
    engine = next(iter(server.avatars.values())).engine
    print(
        f"serving {', '.join(server.avatars)} on http://{host}:{port} ({server.capacity} session(s) at once; "
        f"{engine.runtime} {engine.providers[0]} {engine.precision})",
        flush=True,
    )
    serve(server, host=host, port=port, log_level="info" if args.verbose else "warning")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command to ``sub``."""
    p = sub.add_parser(
        "serve",
        help="serve avatars live: speech in over a WebSocket, the person speaking out",
        description="Serve one or more avatars (a template and its U-Net each; the audio encoder is shared) "
        "over WebSocket at /v1/avatars/NAME/stream; /v1/avatars lists them, /metrics has Prometheus metrics. "
        "Listens on 127.0.0.1 unless told otherwise; another address needs --token-file (or --insecure). "
        "A flag given here beats the same setting in --config.",
    )
    p.add_argument(
        "--avatar",
        action="append",
        default=[],
        metavar="NAME=TEMPLATE_DIR:UNET.onnx",
        help="an avatar (repeat for more)",
    )
    p.add_argument("--audio-encoder", help=f"audio encoder ONNX file (default: {DEFAULT_ENCODER})")
    p.add_argument("--config", help="avatars and options from a TOML file ([[avatar]] name, template, unet)")
    p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: 8000)")
    p.add_argument("--token-file", help="file holding the token clients must present")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without a token")
    p.add_argument(
        "--max-clients",
        "--max-sessions",
        dest="max_clients",
        metavar="N",
        help="client connections at once: auto (what the machine sustains at real time) or N "
        "(default: auto; --max-sessions is the former name)",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        help="a browser origin allowed besides the server's own (repeat for more)",
    )
    add_arguments(p)
    p.set_defaults(func=run)
