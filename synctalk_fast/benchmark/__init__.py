"""End-to-end benchmark: the pipeline against the U-Net alone and the loops it replaces.

``synctalk-fast bench`` (or ``python -m bench`` in a checkout) measures, in
one process, on the real template when it is found (``--data`` /
``$SYNCTALK_FAST_DATA`` / ``../shared/data``), else on a synthetic 720p
template, with fixed random weights (no trained weights are needed):

- ``naive``: one frame at a time, cv2 + numpy + ONNX Runtime exactly as
  numerics §3 (``synctalk_fast.reference``): the way the Go ports run; no video;
- ``torch``: the same loop with the PyTorch networks (when torch is installed);
- ``unet``: the U-Net alone on prepared inputs, per session layout and batch size;
- ``frames``: :meth:`Pipeline.frames` to memory, cold and warm template cache;
- ``mp4``: :meth:`Pipeline.generate` to an MP4 with the default settings;
- ``features``: audio -> features for 60 s of speech;
- with ``--presets``: libx264 presets at CRF 20 (CPU time, bit rate, PSNR),
  and the MP4 writer's speed on one core, on all cores and on a hardware
  encoder where one runs.

Each measured row records frames/s, per-stage seconds and peak RSS. Ratios
are taken between rows of the same round (these machines are shared and
noisy); with ``--rounds`` > 1 the median round is reported. The result is a
JSON record (machine, versions, provider, rows, ratios, targets) and a PNG
bar chart.

- :mod:`.machine`: what it ran on;
- :mod:`.measure`: a row (wall-clock spans of whole runs, peak RSS);
- :mod:`.unet`: the U-Net alone, timed by :mod:`synctalk_fast.models.timing`;
- :mod:`.loops`: the reference loops on ONNX Runtime and PyTorch;
- :mod:`.encoders`: x264 presets and encoders;
- :mod:`.chart`: the PNG;
- :mod:`.driver`: the driver, the record and the command line.
"""

from .chart import write_chart
from .driver import TARGETS, build_parser, main, run
from .machine import machine_info

__all__ = ["run", "main", "build_parser", "machine_info", "write_chart", "TARGETS"]
