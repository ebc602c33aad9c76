"""Make a saved folder loadable with ``trust_remote_code=True`` where fourm_hf is not installed.

transformers' remote code is a flat folder of modules that import each other with ``from .x import``.
:func:`write_remote_code` copies the package modules a saved object needs next to its weights,
rewriting the package's relative imports to that flat form, and the config's ``auto_map`` points at
them. With fourm_hf installed the registered classes are used instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent

# Modules (relative to the package) that the model classes import, in dependency order.
MODEL_MODULES = (
    "remote_code.py",
    "errors.py",
    "modalities.py",
    "configuration_fourm.py",
    "modeling/layers.py",
    "modeling/embeddings.py",
    "modeling/validation.py",
    "modeling/checkpoint_loading.py",
    "modeling/modeling_fourm.py",
)

_RELATIVE_IMPORT = re.compile(r"^(\s*from )\.+((?:\w+\.)*)(\w+)( import )", re.MULTILINE)


def flatten_relative_imports(source: str) -> str:
    """``from ..a.b import x`` / ``from .b import x`` -> ``from .b import x`` (one flat folder)."""
    return _RELATIVE_IMPORT.sub(lambda m: f"{m.group(1)}.{m.group(3)}{m.group(4)}", source)


def flat_name(module: str) -> str:
    """File name of a package module in the flat folder: ``modeling/layers.py`` -> ``layers.py``; a
    subpackage's ``modeling/generation/__init__.py`` -> ``generation.py`` (what its importers' flattened
    ``from .generation import`` reads)."""
    path = Path(module)
    return f"{path.parent.name}.py" if path.name == "__init__.py" else path.name


def write_remote_code(save_directory: str | os.PathLike, modules: tuple[str, ...] = MODEL_MODULES) -> list[str]:
    """Copy ``modules`` flat into ``save_directory`` (atomic per file); returns the file names written."""
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
