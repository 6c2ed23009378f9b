"""Sessions per machine: the server's own estimate (``--max-clients auto``) beside the load
generator's ramp, for fp32, bf16 and the int8 model, measured in one run.

For each U-Net configuration the script starts ``synctalk-fast serve`` twice on 127.0.0.1:

1. with ``--max-clients auto``: the capacity it measured at start-up (``/healthz``);
2. with ``--max-clients`` well above that: ``synctalk-fast loadtest --ramp`` (clients speaking
   real speech at real time, 20 ms messages, utterances with pauses, some interrupted) finds the
   largest number of clients whose p95 delay stays within the model's floor (0.45 s) + 0.1 s with
   no frame lost.

Usage: ``python bench/bench_capacity.py [--seconds 15] [--max 6] [--data ../shared/data] [--json OUT]``.
With the shared data: the face U-Net (fp32 on ONNX Runtime, bf16 on OpenVINO) and the shared
1280x720 template; int8 is the package's demo U-Net (every block int8, the same architecture;
its speed stands for an int8 model made by ``synctalk-fast quantize``). The machine is named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_root = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _root]  # measure the installed package

from _material import CLI, Server, material  # noqa: E402

from synctalk_fast._util.system import cpu_cores, cpu_name  # noqa: E402
from synctalk_fast.demo import DEMO_UNET  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0, help="seconds each ramp level talks")
    p.add_argument("--max", type=int, default=6, help="most clients a ramp tries")
    p.add_argument("--data", default=str(_root.parent / "shared" / "data"))
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    print(f"machine: {cpu_name()}, {cpu_cores()} cores", flush=True)
    data = Path(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template, unet, encoder, _, what = material(data, work)
        print(what, flush=True)
        configs = [
            ("fp32, ONNX Runtime", unet, []),
            ("bf16, OpenVINO", unet, ["--runtime", "openvino", "--precision", "bf16"]),
            ("int8 (every block), ONNX Runtime", DEMO_UNET, []),
        ]
        for label, unet, options in configs:
            avatar = f"a={template}:{unet}"
            auto = Server(avatar, encoder, "auto", options, work / "auto.log")
            capacity = auto.health["capacity"]
            auto.stop()
            server = Server(avatar, encoder, str(args.max + 2), options, work / "ramp.log")
            out = work / "ramp.json"
            try:
                ramp = [*CLI, "loadtest", server.base, "--avatar", "a", "--ramp", "--sessions", str(args.max)]
                subprocess.run([*ramp, "--seconds", str(args.seconds), "--json", str(out)], check=False)
            finally:
                server.stop()
            record = json.loads(out.read_text())
            rows.append({"config": label, "auto": capacity, "ramp": record["held"], "levels": record["levels"]})
            print(f"{label}: auto {capacity} session(s), ramp held {record['held']}", flush=True)
    print("\n| U-Net | auto (start-up estimate) | ramp (p95 within floor + 0.1 s) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['auto']} | {r['ramp']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": cpu_name(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
