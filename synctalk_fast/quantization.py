"""Deprecated location of :mod:`synctalk_fast.quantize` (int8 quantization): its public names, re-exported."""

from .quantize import (
    BF16,
    FP32,
    METHODS,
    TOOLS,
    QuantizeReport,
    bf16_advice,
    choose_candidate,
    fidelity,
    name_blocks,
    quantize,
    search_fp32_blocks,
)

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
