"""The engine's options: every one named once, with its type, default, check and help.

:class:`EngineOptions` is the single statement of how an
:class:`~synctalk_fast.engine.Engine` runs (runtime, providers, device,
precision, batch size, session layout, threads, template cache). Every
front end derives from it instead of repeating it:

- the Python API: ``Engine``, ``Pipeline``, ``generate``, ``Stream``,
  ``AvatarServer``, ``render_batch``, ``quantize`` and the benchmark take
  ``options=EngineOptions(...)`` and the same fields as keywords
  (:meth:`EngineOptions.merge`);
- the command line: :func:`add_arguments` makes one flag per field and
  :meth:`EngineOptions.from_args` reads back only the flags that were given;
- config files and manifests: :meth:`EngineOptions.from_mapping` takes the
  field names as keys (strings from a CSV cell are converted).

Precedence is one rule, :meth:`EngineOptions.replace` applied in order:
defaults, then a config file or a manifest row, then the command line.

A new option is one field below (with its ``_option`` metadata).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runtime import DEFAULT_RUNTIME, PRECISIONS, RUNTIMES

__all__ = ["EngineOptions", "add_arguments", "OPTION_NAMES"]


def _option(
    default: Any,
    *,
    help: str,
    flag: str | None = None,
    choices: Sequence[str] | None = None,
    minimum: float | None = None,
    convert: Callable[[Any], Any] | None = None,
    metavar: str | None = None,
) -> Any:
    """A field of :class:`EngineOptions` with what the front ends need to know of it."""
    return field(
        default=default,
        metadata={
            "help": help,
            "flag": flag,
            "choices": choices,
            "minimum": minimum,
            "convert": convert,
            "metavar": metavar,
        },
    )


def _providers(value: Any) -> tuple[str, ...] | None:
    """Providers as a tuple: a list, or a string of names split on commas (or semicolons, in a CSV cell)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    names = tuple(str(p).strip() for p in value if str(p).strip())
    return names or None


def _number(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, str):
            value = value.strip()
            if value.lower() in ("", "none", "auto", "default"):
                return None
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if kind is int and isinstance(value, float) and number != value:
            raise ValueError(f"expected an integer, got {value!r}")
        return number

    convert.__name__ = kind.__name__
    return convert


def _text(value: Any) -> str:
    if not isinstance(value, str):
        value = getattr(value, "name", value)  # a Runtime object given by a caller: its name
    if not isinstance(value, str):
        raise ValueError(f"expected a name, got {value!r}")
    return value.strip()


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs: one object the API, the command line, config files and manifests share.

    Every field is optional; ``EngineOptions()`` is the default engine (the
    best installed provider, fp32, batch size and session layout chosen for
    the device).

    Parameters
    ----------
    runtime : {"onnxruntime", "openvino", "auto"}
    providers : tuple of str, optional
    device_id : int
    precision : {"fp32", "fp16", "bf16"}
    batch_size, sessions, threads : int, optional
    cache_mb : float, optional
        See each field's ``help`` (its metadata), which :func:`add_arguments` makes
        the commands' ``--help``.

    Raises
    ------
    ValueError
        A value of the wrong type or out of range (one line naming the option).
    """

    runtime: str = _option(
        DEFAULT_RUNTIME,
        choices=("auto", *RUNTIMES),
        convert=_text,
        help=f"inference runtime; auto: the fastest here for the U-Net, measured once (default: {DEFAULT_RUNTIME})",
    )
    providers: tuple[str, ...] | None = _option(
        None,
        convert=_providers,
        metavar="NAMES",
        help="providers in order of preference, comma-separated: names or aliases cpu, cuda, tensorrt, rocm, "
        "coreml, directml (default: the best installed; one not installed is an error)",
    )
    device_id: int = _option(
        0,
        flag="--device",
        minimum=0,
        convert=_number(int),
        metavar="N",
        help="which GPU, for providers that have several (default: 0)",
    )
    precision: str = _option(
        "fp32",
        choices=PRECISIONS,
        convert=_text,
        help="U-Net precision: fp32 (exact), fp16 (GPUs; OpenVINO on ARM CPUs), bf16 (OpenVINO on CPUs with "
        "avx512_bf16 or AMX) (default: fp32)",
    )
    batch_size: int | None = _option(
        None,
        minimum=1,
        convert=_number(int),
        metavar="N",
        help="frames per U-Net call, at most (default: 4 on CPU, 16 on GPU)",
    )
    sessions: int | None = _option(
        None,
        minimum=1,
        convert=_number(int),
        metavar="N",
        help="U-Net sessions side by side (default: one per core up to 4 on CPU, 1 on GPU)",
    )
    threads: int | None = _option(
        None,
        minimum=1,
        convert=_number(int),
        metavar="N",
        help="host threads per U-Net session (default: the cores shared out among sessions)",
    )
    cache_mb: float | None = _option(
        None,
        minimum=0,
        convert=_number(float),
        metavar="MIB",
        help="decoded template frame cache in MiB (default: 1/4 of free memory)",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            try:
                value = meta["convert"](value) if value is not None or f.name == "providers" else None
            except ValueError as exc:
                raise ValueError(f"{f.name}: {exc}") from None
            if value is None and f.default is not None:
                value = f.default
            if meta["choices"] is not None and value not in meta["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
            if meta["minimum"] is not None and value is not None and value < meta["minimum"]:
                raise ValueError(f"{f.name} must be >= {meta['minimum']:g}, got {value!r}")
            object.__setattr__(self, f.name, value)

    # -- combining ------------------------------------------------------------------
    def replace(self, **changes: Any) -> EngineOptions:
        """A copy with ``changes`` (field names; unknown names are a ``TypeError``)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def merge(
        cls, options: EngineOptions | None = None, overrides: Mapping[str, Any] | None = None, *, where: str = ""
    ) -> EngineOptions:
        """``options`` (default: the defaults) with the keyword ``overrides`` on top.

        The form every API entry point uses: ``f(..., options=None, **engine_options)``.
        Overrides that are None leave the option as it is, so code that
        forwards ``batch_size=None`` keeps the default or ``options``' value.
        """
        if options is not None and not isinstance(options, EngineOptions):
            raise TypeError(f"options must be an EngineOptions, got {type(options).__name__}")
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        _check_names(given, where=where)
        base = options or cls()
        return dataclasses.replace(base, **given) if given else base

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], *, base: EngineOptions | None = None, source: str = ""
    ) -> EngineOptions:
        """The options of a config file or manifest row: its keys that are
        option names (others are left to the caller), over ``base``.
        Strings are converted (``"4"`` -> 4, ``"cpu;cuda"`` -> providers)."""
        given = {k: v for k, v in mapping.items() if k in OPTION_NAMES}
        try:
            return (base or cls()).replace(**given)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}" if source else str(exc)) from None

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, base: EngineOptions | None = None) -> EngineOptions:
        """The flags of :func:`add_arguments` that were given on the command
        line, over ``base`` (a config file's options, or the defaults)."""
        given = {name: getattr(args, name) for name in OPTION_NAMES if hasattr(args, name)}
        return (base or cls()).replace(**given)

    def to_dict(self) -> dict[str, Any]:
        """Field -> value (providers as a list): JSON-ready, and keys of :meth:`from_mapping`."""
        out = dataclasses.asdict(self)
        if out["providers"] is not None:
            out["providers"] = list(out["providers"])
        return out

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults."""
        default = EngineOptions()
        return {k: v for k, v in self.to_dict().items() if getattr(default, k) != getattr(self, k)}

    @property
    def provider_list(self) -> list[str] | None:
        """Providers as a list (what the runtime layer takes), None for the default."""
        return None if self.providers is None else list(self.providers)


#: Every option's name, in declaration order (config and manifest keys, keyword names).
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EngineOptions))


def _check_names(given: Mapping[str, Any], *, where: str = "") -> None:
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"{where or 'engine options'}: unknown option(s) {', '.join(unknown)}; expected {', '.join(OPTION_NAMES)}"
        )


def flag(name: str) -> str:
    """The command-line flag of option ``name`` (``batch_size`` -> ``--batch-size``)."""
    f = EngineOptions.__dataclass_fields__[name]
    return f.metadata["flag"] or "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser | Any, *, only: Sequence[str] | None = None) -> None:
    """Add one flag per option to ``parser`` (or an argument group).

    The flags default to "not given" (``argparse.SUPPRESS``), so that
    :meth:`EngineOptions.from_args` can tell a flag given on the command
    line (which beats a config file) from a default.
    """
    for f in dataclasses.fields(EngineOptions):
        if only is not None and f.name not in only:
            continue
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": meta["help"]}
        if meta["choices"] is not None:
            kwargs["choices"] = meta["choices"]
        else:
            kwargs["type"] = meta["convert"]
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(flag(f.name), **kwargs)
