"""The live avatar server on loopback, for test_server and test_browser: one
avatar ``ann`` (a synthetic 320x240 template of 12 frames on the demo models,
conftest's ``model_dir``) served by uvicorn at 127.0.0.1 in a thread.

A test module takes the fixtures by importing them by name
(``from _server_fixtures import running, server, tpl_dir``); each module that
does gets its own server. Skips the importing module when the server's
extras are missing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("websockets")

from synctalk_fast.demo import synthetic_template  # noqa: E402
from synctalk_fast.server import AvatarServer, AvatarSpec  # noqa: E402

RATE = 16000  # the protocol's (and the test audio's) sample rate
W, H = 320, 240  # the avatar's frame size


class Running:
    """``server.app`` on uvicorn at 127.0.0.1 on a free port, in a thread."""

    def __init__(self, server: AvatarServer):
        import uvicorn

        config = uvicorn.Config(server.app, host="127.0.0.1", port=0, log_level="warning",
                                ws_max_size=server.limits.max_message_bytes)
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


def make_server(model_dir: Path, tpl: Path, **options) -> AvatarServer:
    """The avatar ``ann`` of template ``tpl`` on the demo U-Net; two sessions of one thread each unless
    ``options`` say otherwise."""
    options = {"max_sessions": 2, "sessions": 2, "threads": 1, **options}
    return AvatarServer([AvatarSpec("ann", tpl, model_dir / "unet_328.onnx")], model_dir / "audio_encoder.onnx",
                        **options)


@pytest.fixture(scope="module")
def tpl_dir(tmp_path_factory):
    return synthetic_template(tmp_path_factory.mktemp("tpl") / "ann", frames=12, width=W, height=H)


@pytest.fixture(scope="module")
def server(model_dir, tpl_dir):
    return make_server(model_dir, tpl_dir)


@pytest.fixture(scope="module")
def running(server):
    r = Running(server)
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def fresh_limits(server):
    """Each test starts with the server's limits and token as it was made (a test may change them)."""
    limits, token = server.limits, server.token
    yield
    server.limits, server.token = limits, token
