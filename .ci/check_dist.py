"""Check what an sdist or a wheel holds: ``check_dist.py sdist|wheel FILE``."""

import sys
import tarfile
import zipfile


def fail(msg: str) -> None:
    sys.exit(f"check_dist: {sys.argv[2]}: {msg}")


# The one model that ships: the demo's trained U-Net (tools/train_demo_unet.py).
SHIPPED_MODELS = {"synctalk_fast/demo_model/unet_int8.onnx"}
MAX_SHIPPED_BYTES = 16_000_000

kind, path = sys.argv[1], sys.argv[2]
if kind == "sdist":
    with tarfile.open(path) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for need in ("pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "csrc/module.cpp",
                 "csrc/include/synctalk_fast/mel.hpp", "synctalk_fast/__init__.py", "synctalk_fast/_core.pyi",
                 "synctalk_fast/py.typed", "tests/conftest.py"):
        if need not in names:
            fail(f"missing {need}")
    bad = sorted(n for n in names if n.endswith((".onnx", ".pth", ".jpg", ".lms", ".wav", ".so")) or "shared/" in n)
    bad = [n for n in bad if not n.startswith("docs/") and n not in SHIPPED_MODELS]
    if bad:
        fail(f"must not hold models, data or binaries: {bad[:5]}")
elif kind == "wheel":
    if "manylinux" not in path:
        fail("not a manylinux wheel")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if not any(n.startswith("synctalk_fast/_core") and n.endswith((".so", ".pyd")) for n in names):
        fail("the compiled core synctalk_fast/_core is missing")
    for need in ("synctalk_fast/_core.pyi", "synctalk_fast/py.typed", "synctalk_fast/reference/torch_nets.py",
                 "synctalk_fast/engine/core.py", "synctalk_fast/engine/options.py", "synctalk_fast/runtime/ort.py",
                 "synctalk_fast/models/session.py", "synctalk_fast/serve/static/index.html",
                 "synctalk_fast/demo_model/PROVENANCE.json", *SHIPPED_MODELS):
        if need not in names:
            fail(f"missing {need}")
    with zipfile.ZipFile(path) as z:
        shipped = sum(z.getinfo(n).compress_size for n in SHIPPED_MODELS)
    if shipped > MAX_SHIPPED_BYTES:
        fail(f"the shipped models take {shipped / 1e6:.1f} MB of the wheel (at most {MAX_SHIPPED_BYTES / 1e6:.0f})")
else:
    sys.exit("usage: check_dist.py sdist|wheel FILE")
print(f"check_dist: {path.rsplit('/', 1)[-1]}: OK")
