"""An AvatarServer in a process of its own (for measurements of the server
alone, e.g. its memory): ``server_process.py MODEL_DIR TEMPLATE_DIR
[LIMITS_JSON [MAX_CLIENTS]]`` serves the avatar ``ann`` on 127.0.0.1 at a free port
(one client at a time unless told), prints one JSON line ``{"port", "pid"}`` and
serves until its stdin closes."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _server_fixtures import Running, make_server  # noqa: E402

from synctalk_fast.serve import Limits  # noqa: E402


def main(model_dir: Path, tpl: Path, limits: dict, max_clients: int = 1) -> None:
    server = make_server(model_dir, tpl, max_clients=max_clients, limits=Limits(**limits))
    running = Running(server)
    print(json.dumps({"port": running.port, "pid": os.getpid()}), flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait()
    running.stop()


if __name__ == "__main__":
    limits = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    main(Path(sys.argv[1]), Path(sys.argv[2]), limits, int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    os._exit(0)  # daemon threads (engine workers) end with the process
