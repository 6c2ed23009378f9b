"""The int8 tools, one module each behind one interface (:mod:`.base`):
ONNX Runtime's quantizer (:mod:`.ort`) and NNCF (:mod:`.nncf`).

:func:`select` turns ``quantize(tool=...)`` into the tools to run. A new
tool is a module with a class implementing :class:`~.base.Tool`, added to
:data:`TOOL_CLASSES`.
"""

from __future__ import annotations

from ...errors import ModelError
from .base import Calibrated, Candidate, Job, Tool, build
from .nncf import NncfTool
from .ort import OnnxRuntimeTool

__all__ = ["Tool", "Calibrated", "Candidate", "Job", "build", "select", "TOOLS", "TOOL_CLASSES"]

#: Every tool, in the order "auto" runs them.
TOOL_CLASSES: tuple[type[Tool], ...] = (OnnxRuntimeTool, NncfTool)
#: ``quantize(tool=...)``: "auto" tries every tool installed and keeps the best candidate.
TOOLS = ("auto", *(t.name for t in TOOL_CLASSES))


def select(tool: str, notes: list[str]) -> list[Tool]:
    """The tools to run for ``quantize(tool=tool)``; a note in ``notes`` for
    each optional tool "auto" has to leave out.

    Raises
    ------
    ValueError
        Unknown ``tool``, or an optional tool asked for by name that cannot run here.
    ModelError
        A required tool (ONNX Runtime's) that cannot run here.
    """
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; expected one of {', '.join(TOOLS)}")
    chosen: list[Tool] = []
    for cls in TOOL_CLASSES:
        if tool not in ("auto", cls.name):
            continue
        t = cls()
        problem = t.problem()
        if problem is None:
            chosen.append(t)
        elif not t.optional:
            raise ModelError(problem)
        elif tool != "auto":
            raise ValueError(problem)
        else:
            notes.append(f"only ONNX Runtime's int8 was tried: {problem}")
    return chosen
