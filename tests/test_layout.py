"""The house rules of ``src/fourm_hf``, checked on the source tree (no module is imported).

- no file over ``MAX_FILE_LINES`` lines; no folder holds more than ``MAX_FOLDER_MODULES`` modules;
- ``def main(`` only in ``fourm_hf/commands/`` and ``cli.py``: library modules have no command line;
- no import cycle between fourm_hf modules;
- imports point down the layers of ``LAYERS`` (docs/architecture.md).

The import graph is read from the AST. An edge is any ``import`` / ``from ... import`` of a fourm_hf
module, wherever it stands: at module level or inside a function. Imports inside functions count
because hiding an import in a function does not remove the dependency: it only defers it, and a
circle closed by a deferred import is still a circle a reader has to untangle (and fails as soon as
someone moves the import to the top). Strings given to ``importlib.import_module`` are not edges:
``cli.py`` names its commands that way on purpose, and ``FourMModel.push_to_hub`` reaches up to
``hub.py`` that way (listed in ``RUNTIME_UPWARD_CALLS`` below, so the exception is written down).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "fourm_hf"
PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE
MAX_FILE_LINES = 600
MAX_FOLDER_MODULES = 15
MAIN_ALLOWED = ("fourm_hf.cli", "fourm_hf.commands")

# Top to bottom. A module belongs to the layer of the longest prefix that names it; it may import
# modules of its own layer or of a lower one.
LAYERS = (
    # testing_utils builds tiny models for tests and benchmarks; nothing in the package imports it
    ("commands and app", ("fourm_hf.cli", "fourm_hf.commands", "fourm_hf.app", "fourm_hf.testing_utils")),
    ("evaluation, training, data", ("fourm_hf.evaluation", "fourm_hf.training", "fourm_hf.data")),
    # hub.py writes checkpoint folders (model + processor + card + pipeline code); ml4m.assembly puts a
    # released model together with its tokenizers into such a folder and lists its pipeline targets.
    ("pipelines and checkpoint folders", ("fourm_hf.pipelines", "fourm_hf.hub", "fourm_hf.ml4m.assembly")),
    ("processing, modeling, tokenizers, text, ml4m",
     ("fourm_hf.processing", "fourm_hf.modeling", "fourm_hf.tokenizers", "fourm_hf.text", "fourm_hf.ml4m")),
    # plus the small helpers everything may use: the package's exception, output folders, upload selection
    ("config, registry and helpers",
     ("fourm_hf.configuration_fourm", "fourm_hf.modalities", "fourm_hf.remote_code", "fourm_hf.checkpoints",
      "fourm_hf.errors", "fourm_hf.output_paths", "fourm_hf.upload_selection")),
)
# The package's __init__ is the public API: it imports from every layer and nothing inside imports it.
FACADE = PACKAGE

# Upward calls made at runtime through importlib, not by an import statement (documented, not checked).
RUNTIME_UPWARD_CALLS = {
    ("fourm_hf.modeling.modeling_fourm", "fourm_hf.hub"): "FourMModel.push_to_hub uploads through hub.push_checkpoint",
    ("fourm_hf.processing.processor_files", "fourm_hf.hub"): "FourMProcessor.push_to_hub uploads through hub.push_checkpoint",
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``pkg/__init__.py`` -> ``pkg``)."""
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement reads (``from a import b`` gives ``a.b``: it may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]


def _resolve(name: str, modules) -> str | None:
    """The fourm_hf module a dotted name lands in (a module, or the package/module that defines the name)."""
    while name and name.startswith(PACKAGE):
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def statement_targets(node: ast.AST, module: str, modules: dict[str, Path]) -> set[str]:
    """The fourm_hf modules one import statement of ``module`` imports."""
    names = _imported_names(node, module, modules[module].name == "__init__.py")
    targets = {_resolve(name, modules) for name in names} - {None, module}
    if isinstance(node, ast.ImportFrom) and len(targets) > 1:  # `from .pkg import sub`: the submodule
        targets.discard(_resolve(names[-1], modules))
    return targets


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over every import statement, module level or not."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in statement_targets(node, module, modules):
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def layer_of(module: str) -> int:
    """Index in LAYERS (0 = top) of the longest prefix naming ``module``."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS; add its folder there")
    return best


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# ---------------------------------------------------------------------------------------------- the rules


def test_no_file_is_too_long():
    too_long = {str(path.relative_to(PACKAGE_ROOT)): count for path in PACKAGE_ROOT.rglob("*.py")
                if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not too_long, f"files over {MAX_FILE_LINES} lines (split them by concept): {too_long}"


def test_no_folder_has_too_many_modules():
    counts = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        if path.name != "__init__.py":
            folder = str(path.parent.relative_to(PACKAGE_ROOT.parent))
            counts[folder] = counts.get(folder, 0) + 1
    crowded = {folder: count for folder, count in counts.items() if count > MAX_FOLDER_MODULES}
    assert counts, "found no modules: is PACKAGE_ROOT right?"
    assert not crowded, f"folders over {MAX_FOLDER_MODULES} modules (split them by concept): {crowded}"


def test_only_commands_define_main():
    offenders = []
    for module, path in module_files().items():
        if module.startswith(MAIN_ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{module}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main"]
    assert not offenders, f"main() outside fourm_hf/commands (move the command line there): {offenders}"


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles (put what both sides need in one module lower down): {found}"


def test_imports_point_down():
    graph = import_graph()
    upward = []
    for module, edges in graph.items():
        if module == FACADE:
            continue
        for target, line in edges.items():
            if target == FACADE:
                upward.append(f"{module}:{line} imports the package facade {FACADE}; import the module that defines the name")
            elif layer_of(target) < layer_of(module):
                upward.append(f"{module}:{line} ({LAYERS[layer_of(module)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_runtime_upward_calls_are_the_listed_ones():
    """The importlib calls that reach up the layers are exactly those in RUNTIME_UPWARD_CALLS."""
    call = re.compile(r"import_module\(\s*[\"'](fourm_hf[\w.]*)[\"']")
    found = set()
    for module, path in module_files().items():
        for target in call.findall(path.read_text(encoding="utf-8")):
            if module != "fourm_hf.cli" and layer_of(target) < layer_of(module):
                found.add((module, target))
    assert found == set(RUNTIME_UPWARD_CALLS)


# ------------------------------------------------------------------------------- the checker itself


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from ..modalities import get_modality\n", "fourm_hf.text.box_text", {"fourm_hf.modalities"}),
        ("from . import layers\n", "fourm_hf.modeling", {"fourm_hf.modeling.layers"}),
        ("def f():\n    from ..hub import write_model_card\n", "fourm_hf.ml4m.conversion", {"fourm_hf.hub"}),
        ("import fourm_hf.data.corpus\n", "fourm_hf.app.demo", {"fourm_hf.data.corpus"}),
        ("from .scenes import render_scene\n", "fourm_hf.data.corpus", {"fourm_hf.data.scenes"}),
        ("import fourm_hf  # the facade\n", "fourm_hf.app.demo", {"fourm_hf"}),
        ("from .. import save_grid\n", "fourm_hf.app.demo", {"fourm_hf"}),
        ("import numpy\n", "fourm_hf.data.corpus", set()),
    ],
)
def test_import_statements_resolve_to_modules(source, module, expected):
    node = ast.parse(source).body[-1]
    if isinstance(node, ast.FunctionDef):
        node = node.body[0]
    assert statement_targets(node, module, module_files()) == expected


def test_cycle_finder_and_layers_catch_what_they_should():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []
    assert layer_of("fourm_hf.ml4m.assembly") < layer_of("fourm_hf.ml4m.conversion")
    assert layer_of("fourm_hf.commands.demo") < layer_of("fourm_hf.data.corpus") < layer_of("fourm_hf.modalities")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("fourm_hf.somewhere_new")
