"""What the resumable, sharded dataset writers share (``make-scenes``, ``build-corpus``, ``pseudo-label``).

Each cuts its items into shards (:func:`shard_bounds`) and writes them as datasets saved atomically
under ``<out>.shards/`` (:func:`start_sharded_run`), named by :func:`shard_name`; a rerun writes only
the :func:`unwritten_shards` (removing what a killed run left half-written), and only with the
parameters of the run that started the folder. Its own progress bar counts items:
:func:`quiet_datasets` hides the per-save bars of ``datasets`` meanwhile.
:func:`load_dataset_split` reads such a dataset back (or one split of a saved ``DatasetDict``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..output_paths import clean_stale_staging


def shard_name(shard: int, num_shards: int) -> str:
    """Folder name of shard ``shard`` of ``num_shards``: ``shard-00002-of-00004``."""
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def shard_bounds(total: int, shard_size: int) -> list[tuple[int, int, int]]:
    """``(shard, start, stop)`` of each shard of ``total`` items cut into ``shard_size`` (the last may be shorter)."""
    num_shards = (total + shard_size - 1) // shard_size
    return [(shard, shard * shard_size, min(total, (shard + 1) * shard_size)) for shard in range(num_shards)]


def unwritten_shards(shards_dir: Path, bounds, num_shards: int) -> list[tuple[int, int, int]]:
    """The ``bounds`` whose shard folder (of ``num_shards``) is not in ``shards_dir`` yet; the staging
    folders a killed run left of them are removed."""
    unwritten = []
    for bound in bounds:
        folder = Path(shards_dir) / shard_name(bound[0], num_shards)
        clean_stale_staging(folder)
        if not folder.is_dir():
            unwritten.append(bound)
    return unwritten


def differing_keys(existing: dict, params: dict) -> list[str]:
    """The keys whose values differ between a run's saved parameters and this call's (either side may lack one)."""
    return sorted(key for key in set(existing) | set(params) if existing.get(key) != params.get(key))


def start_sharded_run(out_dir: Path, run_params: dict, params_file: str, command: str) -> Path:
    """The shards folder ``<out_dir>.shards`` of a run with ``run_params``, created if missing.

    A folder left by an unfinished run must hold the same parameters in ``params_file``, else
    ``ValueError`` naming those that differ; a new folder gets them (written atomically).
    """
    out_dir = Path(out_dir)
    shards_dir = out_dir.parent / f"{out_dir.name}.shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    path = shards_dir / params_file
    params = json.loads(json.dumps(run_params))  # as they read back (tuples become lists)
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != params:
            differing = differing_keys(existing, params)
            raise ValueError(f"{command}: {shards_dir} holds an unfinished run with different {differing}; "
                             "rerun with its arguments or delete it")
    else:
        temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(params, indent=1, sort_keys=True))
        os.replace(temporary, path)
    return shards_dir


@contextlib.contextmanager
def quiet_datasets():
    """Hide datasets' own progress bars and restore the setting afterwards."""
    from datasets import utils as datasets_utils

    was_disabled = datasets_utils.are_progress_bars_disabled()
    datasets_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets_utils.enable_progress_bars()


def load_dataset_split(path, split: str, option: str = "--dataset"):
    """The ``datasets.Dataset`` saved at ``path`` (``save_to_disk``), or its ``split`` when it is a
    ``DatasetDict``; a missing split is a ``ValueError`` naming ``option`` and the splits there are."""
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"{option} {path}: no split {split!r}; splits are {sorted(dataset)}")
        dataset = dataset[split]
    return dataset
