"""One person's networks and the U-Net step, shared by every producer.

- :mod:`.options`: :class:`EngineOptions`, every engine option once;
- :mod:`.step`: the U-Net step's host side (prepare, paste) and :class:`StepBatch`;
- :mod:`.layout`: CPU session layouts and the measurement that picks one;
- :mod:`.scheduler`: producers sharing the sessions (:class:`Producer`, :class:`WorkSource`);
- :mod:`.core`: :class:`Engine`, which owns the sessions and offers all of the above.
"""

from ..shapes import ENCODER_BATCH
from .core import Engine
from .layout import LAYOUTS
from .options import EngineOptions
from .scheduler import Producer, StepItem, WorkSource
from .step import StepBatch

__all__ = ["Engine", "EngineOptions", "StepBatch", "StepItem", "WorkSource", "Producer", "LAYOUTS", "ENCODER_BATCH"]
