"""Output folders of long jobs: checked up front, written under a temporary name, stale ones cleaned.

A long job (make-scenes, build-corpus, pseudo-label, train-tokenizer, convert-ml4m, assemble-*)
writes ``<out>`` as ``<out>.tmp-<pid>`` (or ``.<name>.tmp-<pid>``) and renames it when complete.
A job killed before the rename leaves that folder behind; the next run of any job writing ``<out>``
removes it when its process is gone (:func:`clean_stale_staging`). :func:`check_output_dir` tells
up front, with the user's path, when ``<out>`` cannot be written at all; :func:`write_atomic` writes one
file the same way.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def check_output_dir(out, option: str = "--out") -> Path:
    """``out`` can become a folder: it is one or does not exist yet, and the nearest existing folder
    above it (where the job creates the missing ones) is writable. Raises ValueError naming ``option``
    and the path as the user gave it."""
    path = Path(out)
    shown = os.fspath(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {shown}: exists and is not a folder.")
    existing = path if path.is_dir() else path.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {shown}: {existing} is a file, not a folder.")
    probe = existing / f".fourm-hf-probe-{os.getpid()}"
    try:  # os.access says yes to root everywhere; creating a folder is the real test
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        raise ValueError(f"{option} {shown}: cannot create folders in {existing} ({error.strerror}).") from error
    return path


def staging_pattern(name: str) -> re.Pattern:
    """``<name>.tmp-<pid>`` and ``.<name>.tmp-<pid>``."""
    return re.compile(rf"^\.?{re.escape(name)}\.tmp-(\d+)$")


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(out) -> list[Path]:
    """Remove ``<out>.tmp-<pid>`` / ``.<name>.tmp-<pid>`` siblings of ``out`` whose process is gone;
    returns what was removed."""
    path = Path(out)
    parent = path.resolve().parent
    if not parent.is_dir():
        return []
    pattern, removed = staging_pattern(path.name), []
    for candidate in parent.iterdir():
        match = pattern.match(candidate.name)
        if match and not process_alive(int(match.group(1))):
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def staging_dir(out, hidden: bool = False) -> Path:
    """A fresh ``<out>.tmp-<pid>`` (``.<name>.tmp-<pid>`` when ``hidden``) next to ``out``, after
    cleaning stale ones."""
    path = Path(out)
    clean_stale_staging(path)
    staged = path.with_name(f"{'.' if hidden else ''}{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    return staged


__all__ = ["check_output_dir", "clean_stale_staging", "process_alive", "staging_dir", "staging_pattern"]


def write_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path
