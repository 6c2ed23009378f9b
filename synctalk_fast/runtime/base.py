"""The interface every inference runtime implements, and the row type of
its provider table.

A runtime opens sessions on a model (an ONNX file or its bytes); a session
runs float32 arrays by graph input name. What each provider (device) of a
runtime means is one :class:`Provider` row of that runtime's table; the
rest of the package asks the table and never names a provider itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Provider", "SessionRequest", "Runtime", "RuntimeSession"]


@dataclass(frozen=True)
class SessionRequest:
    """What a session is opened for.

    Attributes
    ----------
    threads : int
        Host threads for the session's own parallel loops.
    batch : int
        The usual batch (engines that build per-shape plans build for it).
    precision : str
        One of the runtime's ``precisions``.
    inputs : mapping of str to tuple of int
        Graph input name -> shape of one item (no batch dimension); empty
        when the caller does not know the model's roles.
    spinning : bool
        Idle runtime threads may busy-wait.
    device_id : int
        Which device of the provider's kind (GPU number).
    plain : bool
        The runtime's own default options instead of this package's tuning
        (the benchmark's naive baseline); ``threads`` 0 leaves the thread
        count to the runtime too.
    """

    threads: int
    batch: int = 4
    precision: str = "fp32"
    inputs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    spinning: bool = False
    plain: bool = False
    device_id: int = 0


@dataclass(frozen=True)
class Provider:
    """One provider (device) of a runtime: one row of its table.

    Attributes
    ----------
    name : str
        The runtime's own name (``"CUDAExecutionProvider"``).
    alias : str
        Short name users type (``"cuda"``).
    rank : int
        Preference among the installed ones, lowest first.
    accelerator : bool
        Runs on a device of its own: one session per device, host threads
        only feed it. False: the host CPU, one session per core.
    memory : str
        Where its IOBinding buffers live (``"cpu"``, ``"cuda"``).
    batch : int
        Default frames per U-Net call.
    io_binding : bool
        Inputs and outputs bound to device buffers by default.
    options : callable, optional
        ``options(request) -> dict`` of provider options for a session.
    device_option : str, optional
        The provider option that selects the device (``request.device_id``).
    """

    name: str
    alias: str
    rank: int
    accelerator: bool
    memory: str
    batch: int
    io_binding: bool
    options: Callable[[SessionRequest], dict] | None = None
    device_option: str | None = None


@runtime_checkable
class RuntimeSession(Protocol):
    """An open model. ``run`` may be called from any thread."""

    providers: list[str]  # in use, best first
    provider: Provider  # the row of providers[0]
    precision: str
    threads: int
    io_binding: bool
    per_shape: bool  # plans (compiles, searches algorithms) per input shape: warm each shape before live use

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Outputs (all, or those named) for float32 ``feeds``; new arrays the caller owns."""
        ...


class Runtime(Protocol):
    """An inference runtime (ONNX Runtime; others plug in the same way)."""

    name: str
    precisions: tuple[str, ...]
    rewrites: tuple[str, ...]  # precisions that run on a rewritten model (see convert)
    providers: Mapping[str, Provider]  # the table, by name

    def available(self) -> list[str]:
        """Names of the installed providers of the table, best first."""
        ...

    def installed(self) -> list[str]:
        """Names of every provider the installed build has, in its own order."""
        ...

    def open(
        self,
        model: str | os.PathLike | bytes,
        *,
        providers: Sequence[str],
        request: SessionRequest,
        io_binding: bool | None = None,
    ) -> RuntimeSession:
        """A session on ``model`` with the first usable of ``providers``
        (``io_binding`` None: the provider's default)."""
        ...

    def convert(self, model: str | os.PathLike, precision: str) -> bytes | None:
        """The model rewritten for ``precision`` (one of ``rewrites``), serialised."""
        ...
