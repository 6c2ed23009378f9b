"""Fixtures of the server's tests: ``server`` (module-scoped, see
_server_fixtures.make_server), ``running`` (it on uvicorn at 127.0.0.1),
``tpl_dir`` (its template folder). A test that uses ``server`` gets the
server's limits and token back as they were made after it (a test may change
them). Tests that need the server skip when its extras are missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests and scripts here import _server_fixtures

from _server_fixtures import Running, make_server  # noqa: E402


def _needs_extras() -> None:
    for module in ("starlette", "uvicorn", "prometheus_client", "websockets"):
        pytest.importorskip(module)


@pytest.fixture(scope="module")
def tpl_dir(template_dir):
    return template_dir


@pytest.fixture(scope="module")
def server(model_dir, tpl_dir):
    _needs_extras()
    return make_server(model_dir, tpl_dir)


@pytest.fixture(scope="module")
def running(server):
    r = Running(server)
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def fresh_limits(request):
    """A test using the server leaves its limits and token as they were made."""
    if "server" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("server")
    limits, token = server.limits, server.token
    yield
    server.limits, server.token = limits, token
