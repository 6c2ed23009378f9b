"""Sphinx configuration of the synctalk_fast documentation.

Build (as CI does; warnings are errors, ``-n`` makes every broken
cross-reference one)::

    sphinx-build -W --keep-going -n -b html docs docs/_build/html

The build is offline: no intersphinx, no theme assets from the network.
The package is imported from the environment (``pip install -e ".[docs]"``),
never from the source tree, which has no compiled core.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import inspect
import os
import re
import tomllib
import types
from pathlib import Path

from docutils import nodes
from numpydoc.docscrape import NumpyDocString
from sphinx.domains import Domain
from sphinx.pycode import ModuleAnalyzer

import synctalk_fast

ROOT = Path(__file__).resolve().parents[1]

project = "synctalk-fast"
author = "synctalk_fast developers"
copyright = "synctalk_fast developers"
release = synctalk_fast.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``{role}`target``` roles, ``:::`` fences, heading anchors for
# ``[text](page.md#a-heading)`` links (checked, like every reference).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc / autosummary / numpydoc
autodoc_default_options = {"members": True, "undoc-members": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # `options=EngineOptions()` as written, not its repr
autosummary_generate = False  # the API pages are written by hand; no generated files
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# -n (nitpicky): a reference that resolves nowhere is an error. Without
# intersphinx (the build is offline) the standard library and third-party
# packages have no inventory, so references to their types are accepted
# unresolved; references to this package's names must resolve.
nitpicky = True
_NO_INVENTORY = (
    # third-party packages
    "numpy",
    "np",
    "numpy.typing",
    "npt",
    "onnx",
    "onnxruntime",
    "ort",
    "openvino",
    "nncf",
    "av",
    "cv2",
    "soundfile",
    "soxr",
    "starlette",
    "uvicorn",
    "websockets",
    "aiortc",
    "prometheus_client",
    "ray",
    "torch",
    "tqdm",
    "pipecat",
    "livekit",
    "rtc",  # livekit.rtc, as the plug-ins' docstrings name it
    # the standard library
    "pathlib",
    "os",
    "io",
    "collections",
    "collections.abc",
    "concurrent.futures",
    "asyncio",
    "threading",
    "queue",
    "logging",
    "argparse",
    "multiprocessing",
    "subprocess",
    "fractions",
    "types",
    "typing",
    "typing_extensions",
    "enum",
    "dataclasses",
    "contextlib",
    "json",
    "numbers",
    "datetime",
    "pickle",
    "_thread",
)
nitpick_ignore_regex = [(r"py:.*", re.escape(name) + r"(\..*)?") for name in _NO_INVENTORY]
# Type hints may name the package's private types (``_util``, ``_Writer``): they
# are not documented, so such a reference has no target by design.
nitpick_ignore_regex += [(r"py:class", r"synctalk_fast\.(.*\.)?_[A-Za-z]\w*(\..*)?")]

# HTML: furo, everything local.
html_theme = "furo"
html_title = f"synctalk-fast {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_copy_source = False


# --- Each object documented once --------------------------------------------------
#
# The API pages (docs/api/, in the order of their toctree) hold ``automodule``
# directives; each documents the names of its module's ``__all__``. A name is
# re-exported by several modules (``synctalk_fast.Engine`` is
# ``synctalk_fast.engine.Engine`` is ``synctalk_fast.engine.core.Engine``): it is
# documented once, in the first module of that order whose ``__all__`` lists it,
# its *home*; the top-level package comes first. Other modules skip it.

DOCS = Path(__file__).resolve().parent
_AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\n((?:[ \t]+:[^\n]*\n)*)", re.MULTILINE)
_SCALARS = (str, bytes, int, float, bool, tuple, frozenset, type(None))


def _api_pages() -> list[Path]:
    index = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    tree = index.split("```{toctree}", 1)[1].split("```", 1)[0]
    names = [line.strip() for line in tree.splitlines() if line.strip() and not line.strip().startswith(":")]
    return [DOCS / "api" / f"{name}.md" for name in names]


def _member_modules() -> list[str]:
    """Modules whose members the API pages document, in page order."""
    found = []
    for page in _api_pages():
        for match in _AUTOMODULE.finditer(page.read_text(encoding="utf-8")):
            if ":no-members:" not in match.group(2) and ":no-index:" not in match.group(2):
                found.append(match.group(1))
    return found


def _key(name: str, obj: object) -> object:
    """Identity of a documented object; constants (whose identity is shared by
    equal values) also by name. A class method is made anew at each attribute
    access: its function is the identity."""
    if isinstance(obj, _SCALARS):
        return (name, id(obj))
    return id(getattr(obj, "__func__", obj))


def _homes() -> dict[object, str]:
    modules = [importlib.import_module(name) for name in _member_modules()]
    homes: dict[object, str] = {}
    # A constant's doc comment (``#:``) is read from the module that assigns it:
    # that module is its home, wherever else it is re-exported.
    for module in modules:
        attr_docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
        for name in getattr(module, "__all__", ()):
            if ("", name) in attr_docs:
                homes.setdefault(_key(name, getattr(module, name)), module.__name__)
    for module in modules:
        for name in getattr(module, "__all__", ()):
            homes.setdefault(_key(name, getattr(module, name)), module.__name__)
    return homes


HOMES = _homes()


def _current_module(app) -> str:
    doc = getattr(app.env, "current_document", None)  # Sphinx 9; earlier: temp_data
    if doc is not None and getattr(doc, "autodoc_module", None):
        return doc.autodoc_module
    return getattr(app.env, "temp_data", {}).get("autodoc:module", "")


@functools.cache
def _listed_attributes(cls: type) -> frozenset[str]:
    """The names the ``Attributes`` section of a class's numpydoc docstring describes."""
    names: set[str] = set()
    for param in NumpyDocString(inspect.getdoc(cls) or "")["Attributes"]:
        names.update(n.strip() for n in param.name.split(","))
    return frozenset(names)


def _current_class(app) -> type | None:
    doc = getattr(app.env, "current_document", None)
    module, klass = (doc.autodoc_module, doc.autodoc_class) if doc is not None else ("", "")
    try:
        cls = getattr(importlib.import_module(module), klass) if module and klass else None
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) else None


def _skip_member(app, what, name, obj, skip, options):
    """Skip private members; a module's ``__all__`` names are documented in
    their home module (there even without a docstring: ``__all__`` is the
    public API), and skipped everywhere else. A class's member that its
    docstring's ``Attributes`` section describes is not listed again."""
    if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
        return True
    if what == "module":
        home = HOMES.get(_key(name, obj))
        if home is not None:
            return home != _current_module(app)
    if what in ("class", "exception"):
        cls = _current_class(app)
        if cls is not None and name in _listed_attributes(cls):
            return True
    return None


# --- Resolving references by object --------------------------------------------------
#
# Code refers to an object by other names than its home's: the module that
# defines it (``synctalk_fast.engine.core.Engine``, which is what signatures'
# type hints name), a package that re-exports it (``synctalk_fast.engine.Engine``),
# or a short name in a docstring (``Engine``, resolved in the docstring's
# module). A reference that Sphinx cannot find by name is looked up by
# *object*: the name is imported, and if the object it gives is documented
# under another name, the reference points there. Names that import nothing
# stay broken, and fail the build.


def _import_name(name: str) -> object:
    """The object a dotted name gives (module prefix imported, the rest by attribute)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError: not this name
        return obj
    raise ImportError(name)


_by_object: dict[object, str] = {}


def _documented_by_object(env) -> dict[object, str]:
    """Object key -> documented full name, for the package's documented objects
    (made at the first reference resolved, when every page has been read)."""
    if _by_object:
        return _by_object
    found = _by_object
    objects = env.get_domain("py").objects
    # Shorter names first: a public name wins over a longer (canonical) alias.
    for name in sorted(objects, key=lambda n: (n.count("."), n)):
        if not name.startswith("synctalk_fast"):
            continue
        try:
            obj = _import_name(name)
        except Exception:  # noqa: BLE001 - documented, but not importable by that name: skip
            continue
        found.setdefault(_key(name.rpartition(".")[2], obj), name)
    return found


PACKAGE_DIR = Path(synctalk_fast.__file__).resolve().parent


def _module_of_file(path: str) -> str | None:
    """``.../synctalk_fast/batch/manifest.py`` -> ``synctalk_fast.batch.manifest``."""
    if not path.endswith(".py"):
        return None
    try:
        rel = Path(path).resolve().relative_to(PACKAGE_DIR.parent)
    except ValueError:
        return None
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_of_name(name: str) -> str | None:
    """The module that defines the object called ``name``."""
    try:
        obj = _import_name(name)
    except Exception:  # noqa: BLE001 - not an importable name
        return None
    module = getattr(obj, "__module__", None)
    if module is None and isinstance(obj, property) and obj.fget is not None:
        module = obj.fget.__module__
    return module if isinstance(module, str) else None


@functools.cache
def _source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def _instance_attribute(cls: type, attr: str) -> bool:
    """Whether instances of ``cls`` have ``attr``: a dataclass field or
    annotation, or an assignment ``self.attr = ...`` in a method."""
    assignment = re.compile(rf"\bself\.{re.escape(attr)}\s*(:[^=]+)?=(?!=)")
    return any(
        attr in getattr(klass, "__annotations__", {}) or assignment.search(_source(klass)) for klass in cls.__mro__
    )


def _documented_name(name: str, by_object: dict[object, str]) -> str | None:
    """The documented name of the object ``name`` gives. An attribute of a
    documented class that is not documented itself (it exists only on
    instances: a dataclass field, ``self.x = ...``; or it is inherited from a
    private base) points to its class."""
    parent, _, attr = name.rpartition(".")
    try:
        obj = _import_name(name)
    except AttributeError:
        obj = None
    except Exception:  # noqa: BLE001 - not an importable name
        return None
    if obj is not None:
        documented = by_object.get(_key(attr, obj))
        if documented is not None:
            return documented
    try:
        owner = _import_name(parent)
    except Exception:  # noqa: BLE001 - not an importable name
        return None
    if not isinstance(owner, type) or (obj is None and not _instance_attribute(owner, attr)):
        return None
    return by_object.get(_key(parent.rpartition(".")[2], owner))


def _resolve_by_object(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip(".~")
    if hasattr(builtins, target) or target.split(".")[0] in _NO_INVENTORY:
        return None  # not a name of this package
    module = node.get("py:module") or ""
    klass = node.get("py:class") or ""
    candidates = [target]
    # A docstring's names are those of the module that defines it, which is not
    # where it is shown when the object's home is a package re-exporting it.
    path, _, described = str(node.source or "").partition(":docstring of ")
    for defining in dict.fromkeys((_module_of_file(path), _module_of_name(described))):
        if defining and not target.startswith("synctalk_fast"):
            if klass:
                candidates.append(f"{defining}.{klass}.{target}")
            candidates.append(f"{defining}.{target}")
    if module and not target.startswith("synctalk_fast"):
        if klass:
            candidates.insert(0, f"{module}.{klass}.{target}")
        candidates.append(f"{module}.{target}")
        parent = module.rpartition(".")[0]
        while parent:  # relative names in a package's docstring: ``.pools.Pool``
            candidates.append(f"{parent}.{target}")
            parent = parent.rpartition(".")[0]
    by_object = _documented_by_object(env)
    domain = env.get_domain("py")
    for name in candidates:
        if not name.startswith("synctalk_fast"):
            continue
        documented = _documented_name(name, by_object)
        if documented is None:
            continue
        for role in dict.fromkeys((node["reftype"], "obj")):  # `:class:` naming a function alias still links
            ref = domain.resolve_xref(env, node["refdoc"], app.builder, role, documented, node, contnode)
            if ref is not None:
                return ref
    return None


def _fix_signature(app, what, name, obj, options, signature, return_annotation):
    """Type aliases (``Event = tuple[str, int]``) are callable, but have no
    signature: keep numpydoc from reading one (it fails on them). A dataclass
    field's ``default_factory`` shows as ``<factory>``, which is no Python:
    the signature would be split at every comma; show ``...`` instead."""
    if isinstance(obj, (types.GenericAlias, types.UnionType)) or type(obj).__module__ == "typing":
        return signature, return_annotation
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def _describe_paths() -> None:
    """Paths that point into this checkout or the builder's home directory are
    shown relative to them (``<synctalk_fast>/demo_model/...``), not as the
    build machine's absolute path."""
    from sphinx.util import inspect as sphinx_inspect

    describe = sphinx_inspect.object_description
    places = {str(PACKAGE_DIR): "<synctalk_fast>", str(Path.home()): "~"}

    def object_description(obj, *args, **kwargs):
        text = describe(obj, *args, **kwargs)
        if isinstance(obj, os.PathLike):
            for place, name in places.items():
                text = text.replace(place, name)
        return text

    sphinx_inspect.object_description = object_description


# --- Links to repository files --------------------------------------------------------
#
# Pages included from the repository root (CONTRIBUTING.md, CHANGELOG.md) link to
# files that are not pages of the site (``tests/test_imports.py``, ``LICENSE``).
# Such a link points to the file in the repository on GitHub; a link to a file
# that does not exist still fails the build.

with open(ROOT / "pyproject.toml", "rb") as _f:
    REPO_URL = tomllib.load(_f)["project"]["urls"]["Source"].rstrip("/")


class RepositoryFiles(Domain):
    """Resolves a MyST link to a file of the repository that is not a page."""

    name = "repo"
    label = "repository files"

    def resolve_xref(self, env, fromdocname, builder, typ, target, node, contnode):
        return None

    def resolve_any_xref(self, env, fromdocname, builder, target, node, contnode):
        path = target.partition("#")[0]
        if not path or "://" in path:
            return []
        for base in (ROOT, (DOCS / fromdocname).parent):
            file = (base / path).resolve()
            if file.exists() and ROOT in file.parents and DOCS not in (file, *file.parents):
                kind = "tree" if file.is_dir() else "blob"
                ref = nodes.reference("", "", internal=False, refuri=f"{REPO_URL}/{kind}/main/{file.relative_to(ROOT)}")
                ref += contnode
                return [("repo:file", ref)]
        return []

    def merge_domaindata(self, docnames, otherdata):
        pass


def setup(app):
    app.add_domain(RepositoryFiles)
    app.connect("builder-inited", lambda app: _by_object.clear())
    _describe_paths()
    app.connect("autodoc-process-signature", _fix_signature, priority=100)  # before numpydoc's
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("missing-reference", _resolve_by_object)
    return {"parallel_read_safe": True}
