"""Make a saved folder loadable with ``trust_remote_code=True`` where fourm_hf is not installed.

transformers' remote code is a flat folder of modules that import each other with ``from .x import``.
:func:`write_class_code` copies the module that defines a saved object's class and every package module
it imports (:func:`remote_code_closure`, read from the source, so the list is never kept by hand) next
to its weights, rewriting the package's relative imports to that flat form; the config's ``auto_map``
points at them. With fourm_hf installed the registered classes are used instead.

The same functions work from inside such a flat folder (a model loaded with ``trust_remote_code`` and
saved again): the package root is then the flat folder itself.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent

_RELATIVE_IMPORT = re.compile(r"^(\s*from )\.+((?:\w+\.)*)(\w+)( import )", re.MULTILINE)
# ``from ..a.b import`` anywhere in a file (inside functions too: transformers copies those as well)
_IMPORTED_MODULE = re.compile(r"^\s*from (\.+)((?:\w+\.)*\w+) import ", re.MULTILINE)


def flatten_relative_imports(source: str) -> str:
    """``from ..a.b import x`` / ``from .b import x`` -> ``from .b import x`` (one flat folder)."""
    return _RELATIVE_IMPORT.sub(lambda m: f"{m.group(1)}.{m.group(3)}{m.group(4)}", source)


def flat_name(module: str) -> str:
    """File name of a package module in the flat folder: ``modeling/layers.py`` -> ``layers.py``; a
    subpackage's ``modeling/generation/__init__.py`` -> ``generation.py`` (what its importers' flattened
    ``from .generation import`` reads)."""
    path = Path(module)
    return f"{path.parent.name}.py" if path.name == "__init__.py" else path.name


def remote_code_closure(module: str) -> tuple[str, ...]:
    """``module`` (a path relative to the package) and every package module it imports relatively, in
    dependency order (imported modules first). A subpackage import (``from ..modeling.generation import``)
    brings its ``__init__.py`` and, through it, its modules."""
    order: list[str] = []

    def visit(path: str, stack: tuple[str, ...]) -> None:
        if path in order or path in stack:
            return
        source = (PACKAGE_ROOT / path).read_text(encoding="utf-8")
        package = Path(path).parent
        for dots, dotted in _IMPORTED_MODULE.findall(source):
            base = package
            for _ in range(len(dots) - 1):
                base = base.parent
            target = base / Path(*dotted.split("."))
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):  # a module or a subpackage
                if (PACKAGE_ROOT / candidate).is_file():
                    visit(candidate.as_posix(), stack + (path,))
                    break
        order.append(path)

    visit(module, ())
    return tuple(order)


def class_module(cls: type) -> str:
    """Path, relative to the package, of the module defining ``cls`` or, for a subclass defined outside
    the package, its nearest base class inside it (``FourMModel`` -> ``modeling/modeling_fourm.py``)."""
    for klass in cls.__mro__:
        module = sys.modules.get(klass.__module__)
        path = Path(getattr(module, "__file__", None) or "/").resolve()
        if path.is_relative_to(PACKAGE_ROOT):
            return path.relative_to(PACKAGE_ROOT).as_posix()
    raise ValueError(f"{cls.__name__} is not a fourm_hf class and has no fourm_hf base class; no remote code to write")


def write_class_code(save_directory: str | os.PathLike, cls: type) -> list[str]:
    """Write the module that defines ``cls`` and its import closure flat into ``save_directory``, in
    dependency order; returns the file names written."""
    return write_remote_code(save_directory, remote_code_closure(class_module(cls)))


def write_remote_code(save_directory: str | os.PathLike, modules: tuple[str, ...]) -> list[str]:
    """Copy ``modules`` (paths relative to the package) flat into ``save_directory`` (atomic per file);
    returns the file names written."""
    save_directory = Path(save_directory)
    names = [flat_name(module) for module in modules]
    if len(set(names)) != len(names):
        raise ValueError(f"Remote-code modules must have distinct file names, got {names}.")
    for module, name in zip(modules, names):
        path = PACKAGE_ROOT / module
        if not path.exists():  # running from a flat remote-code folder already
            path = PACKAGE_ROOT / name
        source = flatten_relative_imports(path.read_text(encoding="utf-8"))
        temporary = save_directory / f".{name}.tmp"
        temporary.write_text(source, encoding="utf-8")
        os.replace(temporary, save_directory / name)
    return names
