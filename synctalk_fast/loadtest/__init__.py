"""A load generator for the avatar server: how many conversations a machine holds, and how fast.

``synctalk-fast loadtest URL --avatar NAME --sessions N --seconds S`` opens N WebSocket
clients of the public protocol (:mod:`~synctalk_fast.loadtest.client`), each speaking real
speech at real time in 20 ms messages, utterances separated by pauses and some interrupted
(:mod:`~synctalk_fast.loadtest.plan`), and measures per client the frames received per second,
each frame's delay and wait, skipped, dropped and missing frames and ended utterances, and the
server's memory and CPU from its ``/metrics`` (:mod:`~synctalk_fast.loadtest.run`). ``--ramp``
raises N until a level no longer holds and reports the largest that did
(:func:`~synctalk_fast.loadtest.run.ramp`); results go out as text, JSON and a chart
(:mod:`~synctalk_fast.loadtest.report`). :func:`~synctalk_fast.loadtest.faults.soak` runs
well-behaved clients beside misbehaving ones (:data:`~synctalk_fast.loadtest.faults.FAULTS`)
and reports the server's state afterwards.

It is a client only: it imports nothing of :mod:`synctalk_fast.serve`, so it measures what
users get. It needs the ``websockets`` and ``prometheus-client`` packages (the ``serve``
extra). By default it loads only a server on this machine (``--remote`` for another).
"""

from .client import FLOOR, SessionResult, run_session
from .faults import FAULTS, SoakResult, slot_free_seconds, soak
from .plan import PlannedUtterance, speech_plan
from .run import MARGIN, LoadResult, RampResult, endpoints, ramp, run_load, server_sample

__all__ = [
    "FAULTS",
    "FLOOR",
    "MARGIN",
    "LoadResult",
    "PlannedUtterance",
    "RampResult",
    "SessionResult",
    "SoakResult",
    "endpoints",
    "ramp",
    "run_load",
    "run_session",
    "server_sample",
    "slot_free_seconds",
    "soak",
    "speech_plan",
]
