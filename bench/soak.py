"""The soak under faults, ten minutes with every slot in use (``tests/serve/test_soak.py`` runs one minute in CI).

Starts ``synctalk-fast serve`` on 127.0.0.1 admitting ``--good`` + 2 clients (so that fault
clients get in beside the well-behaved ones; they ask ``--fault-max-lag``, 0 by default: their
frames skip the U-Net, so that a small machine keeps the well-behaved clients at real time),
then keeps ``--good`` well-behaved clients (png frames) and as many fault clients as there are
misbehaviours (disconnect mid-utterance, interrupt at random, malformed then oversized messages,
stop reading, reconnect at once) going for ``--seconds``, and prints what the server looks like
afterwards: the well-behaved clients' completeness, the server's memory growth after warm-up,
threads, event-loop tasks and sessions once everyone has left, and how soon a freed slot admits
the next client. Exactness of the frames is checked by the CI test (against offline generation).

Usage: ``python bench/soak.py [--seconds 600] [--good 1] [--data ../shared/data] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

_root = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _root]  # measure the installed package

from _material import Server, material  # noqa: E402

from synctalk_fast._util.system import cpu_cores, cpu_name  # noqa: E402
from synctalk_fast.loadtest import FAULTS, soak  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--good", type=int, default=1, help="well-behaved clients")
    p.add_argument("--fault-max-lag", type=float, default=0.0, help="max_lag the fault clients ask (-1: none)")
    p.add_argument("--data", default=str(_root.parent / "shared" / "data"))
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    print(f"machine: {cpu_name()}, {cpu_cores()} cores", flush=True)
    data = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template, unet, encoder, speech, what = material(data, work)
        print(what, flush=True)
        server = Server(f"a={template}:{unet}", encoder, str(args.good + 2), [], work / "server.log")
        try:
            print(
                f"server: {server.health['capacity']} clients at once; {args.good} good + {len(FAULTS)} fault "
                f"clients, {args.seconds:g} s",
                flush=True,
            )
            result = soak(
                server.base,
                avatar="a",
                seconds=args.seconds,
                good=args.good,
                faulty=len(FAULTS),
                speech=speech,
                fault_max_lag=None if args.fault_max_lag < 0 else args.fault_max_lag,
            )
        finally:
            server.stop()
    for g in result.good:
        print(
            f"good client {g.session}: {g.frames} frames, {g.completed}/{g.flushed} utterances ended, "
            f"{g.missing} missing, {g.dropped} dropped, errors {g.errors}, close {g.close_code}"
        )
    for f in result.faults:
        print(f"fault {f['name']}: {f['rounds']} rounds, {f['refused']} refused, closes {f['closes']}")
    srv = result.server
    print(
        f"server: RSS {srv['rss_warm'] / 2**20:.0f} MiB after warm-up, {srv['rss_end'] / 2**20:.0f} MiB at the end "
        f"({srv['rss_growth'] / 2**20:+.1f} MiB); threads {srv['threads_start']:.0f} -> {srv['threads']:.0f}, "
        f"tasks {srv['tasks_start']:.0f} -> {srv['tasks']:.0f}, sessions {srv['sessions']:.0f}; "
        f"a freed slot admits after {1000 * srv['slot_free_seconds']:.0f} ms"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": cpu_name(), "server": srv, "faults": result.faults}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
