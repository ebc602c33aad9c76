"""The fenced code blocks of README.md and docs/*.md: finding them, checking parse-only blocks, running a page.

The conventions (docs/README.md says them for writers):

* every block names its language: ``python``, ``bash``, ``yaml``, ``json`` or ``text``;
* ``python`` blocks run, in order, in one fresh Python process per page whose working directory is a
  temporary folder (so a block may use what an earlier block of the same page defined or wrote);
* ``bash`` blocks run their ``fourm-hf ...`` commands (in the page's process, through ``fourm_hf.cli.main``)
  and ``python ...`` commands (as child processes) in that same folder; any other command in a block that
  runs is an error (mark the block parse-only);
* the line ``<!-- snippet: parse-only (reason) -->`` right before a block: the block is only checked.
  Python is compiled and every ``fourm_hf`` name it imports or reaches by attributes is resolved
  (keyword arguments of ``fourm_hf`` callables are checked against their signatures); ``fourm-hf``
  commands (also behind ``python -m fourm_hf.cli``, ``torchrun``, ``accelerate launch``) are parsed by
  the command's argparse; ``python FILE`` and ``bash FILE`` must name a file of the repository;
* the line ``<!-- snippet: file PATH -->`` right before a ``yaml`` (or ``json``) block: when the
  repository has PATH the block must equal it; otherwise the block is written to PATH in the page's
  folder before the page's later blocks run;
* ``yaml`` and ``json`` blocks must parse.

The page's folder holds links to the repository's tracked top-level entries (``examples/``, ``src/``, ...),
as a fresh clone would, so commands such as ``fourm-hf train --config examples/configs/x.yaml`` run.

Run as a script, this module is the page runner: ``python doc_snippets.py BLOCKS_JSON RESULTS_JSON``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

LANGUAGES = ("python", "bash", "yaml", "json", "text")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<kind>[\w-]+)\s*(?P<argument>.*?)\s*-->\s*$")
OPENING_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[^`\s]*)\s*$")
CLOSING_FENCE = re.compile(r"^\s*```\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Block:
    """One fenced block of a page. ``line`` is the 1-based line of its opening fence."""

    page: str
    line: int
    language: str
    code: str
    parse_only: str | None = None  # the reason, when the block is only checked
    file: str | None = None  # the path named by a file marker

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def doc_pages(repo_root: Path) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    pages = [repo_root / "README.md"] if (repo_root / "README.md").is_file() else []
    return pages + sorted((repo_root / "docs").rglob("*.md"))


def extract_blocks(page: Path, repo_root: Path) -> tuple[list[Block], list[str]]:
    """The page's fenced blocks, and the problems found in its markers and fences (as messages)."""
    name = page.relative_to(repo_root).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, problems = [], []
    pending = None  # (line number, kind, argument) of a marker waiting for its block
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = MARKER.match(line)
        fence = OPENING_FENCE.match(line)
        if pending and not fence:
            problems.append(f"{name}:{pending[0]}: the snippet marker is not directly followed by a fenced block")
            pending = None
        if marker:
            pending = (index + 1, marker["kind"], marker["argument"])
        elif fence:
            start = index
            index += 1
            body = []
            while index < len(lines) and not CLOSING_FENCE.match(lines[index]):
                body.append(lines[index][len(fence["indent"]):] if lines[index].startswith(fence["indent"]) else lines[index])
                index += 1
            if index == len(lines):
                problems.append(f"{name}:{start + 1}: the fenced block is never closed")
            block = Block(name, start + 1, fence["language"].lower(), "\n".join(body) + "\n")
            problems += _apply_marker(block, pending)
            if block.language not in LANGUAGES:
                problems.append(f"{block.id}: the block's language is {block.language or 'not given'!r}; "
                                f"name one of {', '.join(LANGUAGES)} after the opening ```")
            blocks.append(block)
            pending = None
        index += 1
    if pending:
        problems.append(f"{name}:{pending[0]}: the snippet marker is not directly followed by a fenced block")
    return blocks, problems


def _apply_marker(block: Block, marker) -> list[str]:
    if marker is None:
        return []
    line, kind, argument = marker
    if kind == "parse-only":
        reason = re.fullmatch(r"\((.*)\)", argument)
        if not reason or not reason.group(1).strip():
            return [f"{block.page}:{line}: parse-only needs its reason in parentheses: <!-- snippet: parse-only (why) -->"]
        block.parse_only = reason.group(1).strip()
        return []
    if kind == "file":
        if not argument or block.language not in ("yaml", "json"):
            return [f"{block.page}:{line}: <!-- snippet: file PATH --> names a path and precedes a yaml or json block"]
        block.file = argument
        return []
    return [f"{block.page}:{line}: unknown snippet marker {kind!r} (known: parse-only (reason), file PATH)"]


# ---- bash blocks ----


def bash_commands(code: str) -> list[list[str]]:
    """The commands of a bash block as argv lists: continuation lines joined, comments dropped, ``&&`` and
    ``;`` split, leading ``NAME=value`` assignments kept in front."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command = []
        for token in lexer:
            if token in (";", "&&", "||", "|", "&"):
                commands.append(command)
                command = []
            else:
                command.append(token)
        commands.append(command)
    return [command for command in commands if command]


def split_env(command: list[str]) -> tuple[dict[str, str], list[str]]:
    """``["A=1", "fourm-hf", ...]`` -> ({"A": "1"}, ["fourm-hf", ...])."""
    env = {}
    while command and ENV_ASSIGNMENT.match(command[0]):
        key, value = command[0].split("=", 1)
        env[key] = value
        command = command[1:]
    return env, command


def runnable_argv(command: list[str]) -> list[str] | None:
    """The argv of a child process for a ``python`` command (with this interpreter), or None for others."""
    if command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return None


def fourm_cli_arguments(command: list[str]) -> list[str] | None:
    """The ``fourm-hf`` arguments of a command that runs the CLI (``fourm-hf X``, ``python -m fourm_hf.cli X``,
    ``torchrun ... -m fourm_hf.cli X``, ``accelerate launch ... -m fourm_hf.cli X``), else None."""
    if command[0] == "fourm-hf":
        return command[1:]
    for index in range(len(command) - 1):
        if command[index] == "-m" and command[index + 1] == "fourm_hf.cli":
            return command[index + 2:]
    return None


def check_cli_arguments(arguments: list[str]) -> None:
    """Parse ``fourm-hf ARGUMENTS`` with the command's own argparse, as ``fourm_hf.cli.main`` builds it."""
    from fourm_hf import cli

    if not arguments or arguments[0] in ("-h", "--help"):
        return
    name = arguments[0]
    if name not in cli.COMMANDS:
        raise AssertionError(f"fourm-hf {name}: no such command (known: {', '.join(sorted(cli.COMMANDS))})")
    module_name, help_text = cli.COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"fourm-hf {name}", description=help_text, exit_on_error=False)
    importlib.import_module(module_name).add_arguments(parser)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(arguments[1:])
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise AssertionError(f"fourm-hf {' '.join(arguments)}: {errors.getvalue().strip()}") from None
    except argparse.ArgumentError as error:
        raise AssertionError(f"fourm-hf {' '.join(arguments)}: {error}") from None


def check_bash_parse_only(code: str, repo_root: Path) -> None:
    """The checks of a parse-only bash block (see the module docstring)."""
    for command in bash_commands(code):
        _, command = split_env(command)
        if not command:
            continue
        arguments = fourm_cli_arguments(command)
        if arguments is not None:
            check_cli_arguments(arguments)
        elif command[0] in ("python", "python3", "bash") and len(command) > 1 and not command[1].startswith("-"):
            if not (repo_root / command[1]).is_file():
                raise AssertionError(f"{' '.join(command)}: {command[1]} is not a file of the repository")


# ---- python blocks ----


def check_python_parse_only(code: str) -> None:
    """Compile the block and resolve every ``fourm_hf`` name it imports or reaches by attribute."""
    tree = ast.parse(code)
    bound = {}  # local name -> the fourm_hf object it was imported as
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fourm_hf":
                    module = _import(alias.name)
                    bound[alias.asname or "fourm_hf"] = module if alias.asname else _import("fourm_hf")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fourm_hf" and node.level == 0:
            module = _import(node.module)
            for alias in node.names:
                bound[alias.asname or alias.name] = _attribute(module, alias.name, node.module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _resolve_chain(node, bound)
        elif isinstance(node, ast.Call):
            target = _resolve_chain(node.func, bound)
            if target is not None:
                _check_keywords(target, node)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise AssertionError(f"import {name}: {error}") from None


def _attribute(owner, name: str, owner_name: str):
    if hasattr(owner, name):
        return getattr(owner, name)
    if inspect.ismodule(owner):
        try:
            return importlib.import_module(f"{owner.__name__}.{name}")
        except ImportError:
            pass
    raise AssertionError(f"{owner_name} has no {name!r}")


def _resolve_chain(node, bound):
    """The object an attribute chain rooted at a bound fourm_hf name refers to (None for other chains)."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in bound:
        return None
    value, path = bound[node.id], node.id
    for name in reversed(names):
        value = _attribute(value, name, path)
        path = f"{path}.{name}"
    return value


def _check_keywords(target, call: ast.Call) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    for keyword in call.keywords:
        if keyword.arg is not None and keyword.arg not in signature.parameters:
            raise AssertionError(f"{getattr(target, '__qualname__', target)}() takes no keyword {keyword.arg!r} "
                                 f"(it takes {', '.join(signature.parameters)})")


# ---- data blocks ----


def check_data_block(block: Block, repo_root: Path) -> None:
    """yaml/json blocks parse; under a file marker naming a repository file, they equal it."""
    if block.language == "yaml":
        import yaml

        yaml.safe_load(block.code)
    elif block.language == "json":
        json.loads(block.code)
    if block.file and (repo_root / block.file).is_file():
        expected = (repo_root / block.file).read_text(encoding="utf-8")
        if block.code.strip() != expected.strip():
            raise AssertionError(f"the block differs from the repository's {block.file}; copy the file into the page")


def runs(block: Block, repo_root: Path) -> bool:
    """Whether the page runner executes the block (or, for a file block the repository lacks, writes it)."""
    if block.parse_only:
        return False
    if block.file is not None:
        return not (repo_root / block.file).exists()
    return block.language in ("python", "bash")


# ---- the page runner ----


def prepare_workdir(workdir: Path, repo_root: Path) -> None:
    """Link the repository's tracked top-level entries into ``workdir``, as in a fresh clone."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True).stdout
        names = sorted({line.split("/")[0] for line in listed.splitlines() if line})
    except (OSError, subprocess.CalledProcessError):
        names = sorted(path.name for path in repo_root.iterdir() if not path.name.startswith("."))
    for name in names:
        if (repo_root / name).exists() and not (workdir / name).exists():
            (workdir / name).symlink_to(repo_root / name)


def run_page(blocks: list[Block], results_path: Path) -> None:
    """Run the page's blocks in order in the current folder; write {block id: result} after each block.
    Stops at the first failing block."""
    namespace = {"__name__": "__main__"}
    results = {}
    for block in blocks:
        start = time.perf_counter()
        try:
            if block.language == "python":
                exec(compile(block.code, block.id, "exec"), namespace)
            elif block.language == "bash":
                _run_bash(block)
            else:
                _write_block_file(block)
            results[block.id] = {"ok": True, "seconds": time.perf_counter() - start}
        except BaseException:  # noqa: BLE001 - a failing snippet of any kind is reported, not raised
            results[block.id] = {"ok": False, "seconds": time.perf_counter() - start, "error": traceback.format_exc()[-4000:]}
        temporary = results_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(results), encoding="utf-8")
        temporary.replace(results_path)
        if not results[block.id]["ok"]:
            return


def _write_block_file(block: Block) -> None:
    path = Path(block.file)
    if path.is_absolute() or not path.resolve().is_relative_to(Path.cwd().resolve()):
        raise ValueError(f"file marker {block.file!r}: the path must stay inside the page's folder (relative, "
                         "not through a linked repository folder)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.code, encoding="utf-8")


def _run_bash(block: Block) -> None:
    """Run the block's commands in order: ``fourm-hf`` in this process (``fourm_hf.cli.main``, as the console
    script does; it saves a fresh interpreter's imports per command), ``python`` as a child process."""
    for command in bash_commands(block.code):
        env, command = split_env(command)
        if command and command[0] == "fourm-hf":
            _run_cli_in_process(command[1:], env)
            continue
        argv = runnable_argv(command) if command else None
        if argv is None:
            raise RuntimeError(f"{' '.join(command)}: only fourm-hf and python commands run in a docs block; "
                               "mark the block <!-- snippet: parse-only (reason) -->")
        result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr[-3000:]}")


def _run_cli_in_process(arguments: list[str], env: dict[str, str]) -> None:
    from fourm_hf import cli

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        code = cli.main(arguments)
    except SystemExit as exit:
        code = exit.code
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if code not in (0, None):
        raise RuntimeError(f"fourm-hf {' '.join(arguments)} exited with {code}")


def blocks_json(blocks: list[Block]) -> str:
    return json.dumps([asdict(block) for block in blocks])


if __name__ == "__main__":
    blocks_file, results_file = sys.argv[1:3]
    run_page([Block(**fields) for fields in json.loads(Path(blocks_file).read_text(encoding="utf-8"))], Path(results_file))
    sys.exit(0)
