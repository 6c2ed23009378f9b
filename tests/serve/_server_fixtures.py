"""The live avatar server on loopback, for the tests of tests/serve (and the
scripts they run in a network namespace): one avatar ``ann`` (a synthetic
320x240 template of 12 frames on the demo models) served by uvicorn at
127.0.0.1 in a thread. The fixtures are in this folder's conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synctalk_fast.serve import AvatarServer, AvatarSpec

RATE = 16000  # the protocol's (and the test audio's) sample rate
W, H = 320, 240  # the avatar's frame size


class Running:
    """``server.app`` on uvicorn at 127.0.0.1 on a free port, in a thread."""

    def __init__(self, server: AvatarServer):
        import uvicorn

        config = uvicorn.Config(
            server.app, host="127.0.0.1", port=0, log_level="warning", ws_max_size=server.limits.max_message_bytes
        )
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        self.port = self.uvicorn.servers[0].sockets[0].getsockname()[1]
        self.base = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(15)


def make_server(model_dir: Path, tpl: Path, **options: Any) -> AvatarServer:
    """The avatar ``ann`` of template ``tpl`` on the demo U-Net; two client sessions at most, two
    U-Net sessions of one thread each, unless ``options`` say otherwise."""
    options = {"max_clients": 2, "sessions": 2, "threads": 1, **options}
    return AvatarServer(
        [AvatarSpec("ann", tpl, model_dir / "unet_328.onnx")], model_dir / "audio_encoder.onnx", **options
    )


@contextlib.contextmanager
def in_process(model_dir: Path, tpl: Path, limits: dict | None = None, max_clients: int = 1) -> Iterator[Any]:
    """The server in a process of its own (server_process.py, for figures of the server alone,
    e.g. its memory): an object with ``base``, ``port`` and ``pid``; stopped on leaving."""
    script = Path(__file__).with_name("server_process.py")
    args = [sys.executable, str(script), str(model_dir), str(tpl), json.dumps(limits or {}), str(max_clients)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints its port once it listens (bounded by the kill below)
        assert line, f"the server process ended: {proc.wait(10)}"
        info = json.loads(line)
        yield types.SimpleNamespace(base=f"127.0.0.1:{info['port']}", port=info["port"], pid=info["pid"])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
