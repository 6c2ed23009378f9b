"""``python -m bench`` from a checkout: the end-to-end benchmark
(:mod:`synctalk_fast.benchmark`, also ``synctalk-fast bench``) on the
installed package. Kernel micro-benchmarks: ``python bench/bench_kernels.py``."""

import sys
from pathlib import Path

# The checkout's synctalk_fast has no compiled core: measure the installed one.
_root = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _root]

try:
    from synctalk_fast.benchmark import main
except ImportError as exc:
    sys.exit(f"python -m bench: install the package first (pip install .): {exc}")

sys.exit(main(prog="python -m bench"))
