"""``python -m synctalk_fast.benchmark``: the benchmark's command line."""

import sys

from .driver import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m synctalk_fast.benchmark"))
