"""Inference runtimes: one small interface, one provider table per runtime.

:func:`get_runtime` gives a :class:`Runtime` by name (ONNX Runtime today;
OpenVINO; another runtime is one module implementing
:mod:`~synctalk_fast.runtime.base` plus one entry in :data:`RUNTIMES`). Planning that depends on the device
(:func:`default_batch_size`, :func:`session_plan`) reads the runtime's
table; no other module knows provider names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._util.system import cpu_cores
from .base import Provider, Runtime, RuntimeSession, SessionRequest
from .openvino import OpenVinoRuntime
from .ort import OnnxRuntime

__all__ = [
    "Provider",
    "Runtime",
    "RuntimeSession",
    "SessionRequest",
    "RUNTIMES",
    "DEFAULT_RUNTIME",
    "PRECISIONS",
    "is_accelerator",
    "get_runtime",
    "resolve_providers",
    "provider_name",
    "default_providers",
    "default_batch_size",
    "default_threads",
    "session_plan",
    "cpu_session",
]

#: Runtime name -> factory.
RUNTIMES: dict[str, Callable[[], Runtime]] = {"onnxruntime": OnnxRuntime, "openvino": OpenVinoRuntime}
#: Every precision some runtime runs, the exact one first.
PRECISIONS = ("fp32", "fp16", "bf16")
#: The runtime used unless another is asked for.
DEFAULT_RUNTIME = "onnxruntime"
_instances: dict[str, Runtime] = {}


def get_runtime(name: str | Runtime = DEFAULT_RUNTIME) -> Runtime:
    """The runtime called ``name`` (a :class:`Runtime` object is returned as is)."""
    if not isinstance(name, str):
        return name
    if name not in RUNTIMES:
        auto = " (runtime 'auto' is chosen by an Engine, for a U-Net)" if name == "auto" else ""
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)}{auto}")
    if name not in _instances:
        _instances[name] = RUNTIMES[name]()
    return _instances[name]


def provider_name(name: str, *, runtime: str | Runtime = DEFAULT_RUNTIME) -> str:
    """The runtime's full name of a provider given by alias (``"cuda"``) or
    by name (any case); a name the runtime does not know is returned as given."""
    rt = get_runtime(runtime)
    key = str(name).strip().lower()
    for p in rt.providers.values():
        if key in (p.alias, p.name.lower()):
            return p.name
    return str(name).strip()


def resolve_providers(providers: Sequence[str] | None, *, runtime: str | Runtime = DEFAULT_RUNTIME) -> list[str]:
    """``providers`` as the runtime's names, in the order given: short
    aliases (``"cpu"``, ``"cuda"``, ...) become full names; None gives the
    installed ones, best first (:func:`default_providers`).

    Raises
    ------
    ValueError
        A provider this runtime does not know, or one its installed build
        lacks (the message lists the choices and what is installed).
    """
    rt = get_runtime(runtime)
    if providers is None:
        return rt.available()
    installed = rt.installed()
    names = [provider_name(p, runtime=rt) for p in providers]
    if not names:
        raise ValueError("give at least one provider")
    for given, name in zip(providers, names):
        if name not in installed:
            known = name in rt.providers or name in installed
            choices = ", ".join(p.alias for p in sorted(rt.providers.values(), key=lambda p: p.rank))
            have = ", ".join(rt.providers[n].alias if n in rt.providers else n for n in installed)
            if known:
                raise ValueError(f"provider {given!r} is not available in this {rt.name} build (installed: {have})")
            raise ValueError(
                f"unknown provider {given!r}; use one of {choices} or a full {rt.name} provider name "
                f"(installed: {have})"
            )
    return names


def default_providers(*, runtime: str | Runtime = DEFAULT_RUNTIME) -> list[str]:
    """Installed providers of the runtime, best first (ONNX Runtime: TensorRT
    > CUDA > ROCm > CoreML > DirectML > CPU)."""
    return get_runtime(runtime).available()


def _row(providers: Sequence[str], runtime: str | Runtime) -> Provider:
    rt = get_runtime(runtime)
    first = next(iter(providers), None)
    if first is not None and first in rt.providers:
        return rt.providers[first]
    cpu = min((p for p in rt.providers.values() if not p.accelerator), key=lambda p: p.rank)
    return cpu if first is None else Provider(first, first, 99, True, "cpu", cpu.batch, False)


def is_accelerator(providers: Sequence[str], *, runtime: str | Runtime = DEFAULT_RUNTIME) -> bool:
    """Whether the first of ``providers`` runs on a device other than the host CPU."""
    return _row(providers, runtime).accelerator


def default_batch_size(providers: Sequence[str], *, runtime: str | Runtime = DEFAULT_RUNTIME) -> int:
    """Frames per U-Net call on ``providers`` (the first decides), from the
    runtime's table: 16 on CUDA / TensorRT / ROCm, 8 on DirectML, 4 on
    CoreML and CPU."""
    return _row(providers, runtime).batch


def default_threads() -> int:
    """Host threads for one session on all cores: every core this process may use."""
    return cpu_cores()


def session_plan(
    providers: Sequence[str],
    *,
    sessions: int | None = None,
    threads: int | None = None,
    runtime: str | Runtime = DEFAULT_RUNTIME,
) -> tuple[int, int]:
    """(U-Net sessions, threads each) for ``providers``.

    On the host CPU, one session per core up to 4, the cores shared out
    among them (2 cores -> 2 x 1 thread, 8 -> 4 x 2, 16 -> 4 x 4): sessions
    of one thread need no barrier between their threads, so a core taken by
    another stage for a moment costs only that moment. On an accelerator,
    one session, and the host threads only feed it.
    """
    cores = default_threads()
    if sessions is None:
        sessions = 1 if _row(providers, runtime).accelerator else min(cores, 4)
    sessions = max(1, int(sessions))
    return sessions, int(threads or max(1, cores // sessions))


def cpu_session(model, *, runtime: str | Runtime = DEFAULT_RUNTIME) -> RuntimeSession:
    """A session on the host CPU with every core, for one-off runs (export
    self-checks, weight calibration): ``model`` is a path or serialised bytes."""
    rt = get_runtime(runtime)
    cpu = min((p for p in rt.providers.values() if not p.accelerator), key=lambda p: p.rank)
    return rt.open(model, providers=[cpu.name], request=SessionRequest(threads=default_threads()))
