"""int8 U-Net: static quantization calibrated on the user's own template and
speech, by ONNX Runtime's or NNCF's tools, with a fidelity report.

:func:`quantize` (also ``synctalk_fast.quantize``) is a short recipe of these steps:

- :mod:`.data`: the template's frames paired with the speech's features,
  split into calibration, validation and held-out sets;
- :mod:`.model`: the fp32 model converted to opset 13 when older (checked
  on one frame), its blocks named (:mod:`.graph`: graph surgery);
- :mod:`.tools`: one module per int8 tool behind one interface
  (ONNX Runtime's quantizer, NNCF), each calibrating a candidate;
- :mod:`.search`: the blocks kept in floating point for the target PSNR;
- :mod:`.evaluate`: fidelity and speed of every candidate on the held-out
  frames, against ONNX Runtime fp32;
- :mod:`.report`: :class:`QuantizeReport` and the rule choosing the model written.

Both tools write a QDQ ONNX model (int8 per-channel weights) that runs
through ``Pipeline(unet=...)`` on either runtime; the report says which
runtime and precision it is fast on. Any failure of the ONNX / ONNX Runtime /
NNCF / OpenVINO tooling is raised as a one-line
:class:`~synctalk_fast.errors.ModelError` naming the model (:mod:`.failure`).
It drives the engine, so it lives above it, beside :mod:`~synctalk_fast.pipeline`.
NNCF and OpenVINO are optional (the ``openvino`` extra) and imported only when used.

The top-level package binds ``synctalk_fast.quantize`` to the function,
not to this package: import from the package with ``from
synctalk_fast.quantize import ...`` or ``from synctalk_fast.quantize.tools
import ...``, not by attribute access on ``synctalk_fast``.
"""

from .api import METHODS, quantize
from .evaluate import fidelity
from .graph import name_blocks
from .report import BF16, FP32, QuantizeReport, bf16_advice, choose_candidate
from .search import search_fp32_blocks
from .tools import TOOLS

__all__ = [
    "quantize",
    "QuantizeReport",
    "name_blocks",
    "fidelity",
    "choose_candidate",
    "bf16_advice",
    "search_fp32_blocks",
    "METHODS",
    "TOOLS",
    "FP32",
    "BF16",
]
