"""Backend choice, the private stub, GIL release."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import synctalk_fast as stf
from synctalk_fast import _backend

from conftest import AVAILABLE

KERNELS = {"rfft", "mel_spectrogram", "mel_filterbank", "resize_cubic", "prepare_input", "paste_back"}
STUB = Path(stf.__file__).with_name("_core.pyi")


def _run(code: str, backend: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != _backend.ENV_VAR}
    if backend is not None:
        env[_backend.ENV_VAR] = backend
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_default_choice_prefers_compiled_core():
    expected = AVAILABLE[0]
    assert stf.backend() in _backend.BACKENDS
    if not os.environ.get(_backend.ENV_VAR):
        assert stf.backend() == expected


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI must build every backend")
def test_ci_has_every_backend():
    assert AVAILABLE == ["cpp", "numba", "numpy"]


@pytest.mark.parametrize("name", AVAILABLE)
def test_environment_variable_forces_backend(name):
    code = (
        "import numpy as np, synctalk_fast as s\n"
        "m = s.mel_spectrogram(np.sin(np.arange(4000, dtype=np.float32) / 7))\n"
        "x = s.prepare_input(np.full((64, 64, 3), 9, np.uint8), (8, 8, 40, 40))\n"
        "print(s.backend(), m.shape, round(float(x[0, 0, 0]) * 255))\n"
    )
    res = _run(code, name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [name, "(80,", "21)", "9"]
    assert "Warning" not in res.stderr


def test_unknown_backend_is_a_clear_import_error():
    res = _run("import synctalk_fast", "fortran")
    assert res.returncode != 0
    assert "SYNCTALK_FAST_BACKEND='fortran' is not one of cpp, numba, numpy" in res.stderr


def test_stub_matches_compiled_module():
    core = pytest.importorskip("synctalk_fast._core")
    tree = ast.parse(STUB.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    public = {n for n in dir(core) if not n.startswith("_")}
    assert stubbed == public
    assert KERNELS <= public


@pytest.mark.parametrize("name", AVAILABLE)
def test_every_backend_has_the_same_kernels(name):
    module = _backend.load(name)
    assert KERNELS <= set(dir(module))


def test_typed_package_ships_marker():
    assert Path(stf.__file__).with_name("py.typed").is_file()


@pytest.mark.parametrize("name", [n for n in AVAILABLE if n != "numpy"])
def test_kernels_release_the_gil(name):
    """Two threads finish a batch of kernel calls clearly faster than one."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores")
    k = _backend.load(name)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    pred = rng.random((3, 320, 320), dtype=np.float32)
    outs = [np.empty((6, 320, 320), np.float32) for _ in range(2)]
    canvases = [frame.copy() for _ in range(2)]
    calls = 40

    def work(i, n):
        for _ in range(n):
            k.prepare_input(frame, 500, 200, 700, 400, outs[i])
            k.paste_back(canvases[i], 500, 200, 700, 400, pred, 0)

    work(0, 3)  # warm-up (numba compiles here)

    def timed(threads):
        ts = [threading.Thread(target=work, args=(i, calls // threads)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return time.perf_counter() - t0

    ratios = []
    for _ in range(5):  # best of five: the machine is shared
        one, two = timed(1), timed(2)
        ratios.append(two / one)
        if ratios[-1] < 0.8:
            break
    assert min(ratios) < 0.8, f"2 threads / 1 thread time ratios {ratios}: the GIL seems held"
