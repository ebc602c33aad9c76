"""Training checkpoints that are complete or absent, and what a rerun of the same run does.

:class:`~.trainer.FourMTrainer` writes each ``checkpoint-N`` into ``<output_dir>/.checkpoint-staging/``
and renames it into place only once the model, optimizer, scheduler, RNG states and trainer state are
all written. A run killed while saving leaves at most a folder under ``.checkpoint-staging``, which
transformers' ``get_last_checkpoint`` never sees and the next save (or run) removes: the last
``checkpoint-N`` is always complete.

A rerun of the same ``fourm-hf train`` command resumes from the last complete checkpoint; a rerun
with another config into the same output folder is refused (``--overwrite-output-dir`` starts again).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping

import yaml

STAGING_DIR = ".checkpoint-staging"
FINAL_MODEL_STAGING = "final-model"  # under STAGING_DIR: the model a run saves at its end, before its files move into place
SAVED_CONFIG_NAME = "fourm_pretrain.yaml"  # the resolved settings of the run, next to its checkpoints
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def staging_root(run_dir: str) -> str:
    return os.path.join(run_dir, STAGING_DIR)


def clean_staging(run_dir: str) -> None:
    """Remove what a killed save left under ``<run_dir>/.checkpoint-staging``."""
    shutil.rmtree(staging_root(run_dir), ignore_errors=True)


def replace_folder(staged: str, final: str, set_aside: str) -> None:
    """Move the folder ``staged`` to ``final``. An older ``final`` is first renamed to ``set_aside`` and removed
    after, so a kill at any point leaves either the old or the new complete folder under ``final``'s name
    (or, between the two renames, the old one under ``set_aside``)."""
    if os.path.exists(final):
        shutil.rmtree(set_aside, ignore_errors=True)
        os.replace(final, set_aside)
        os.replace(staged, final)
        shutil.rmtree(set_aside, ignore_errors=True)
    else:
        os.replace(staged, final)


def publish_checkpoint(run_dir: str, name: str) -> str:
    """Move the finished ``.checkpoint-staging/<name>`` to ``<run_dir>/<name>`` (one atomic rename; an older
    folder of that name, from a run resumed from an earlier checkpoint, is replaced by :func:`replace_folder`)."""
    final = os.path.join(run_dir, name)
    replace_folder(os.path.join(staging_root(run_dir), name), final, os.path.join(staging_root(run_dir), f"{name}.replaced"))
    return final


def publish_files(staged_dir: str, output_dir: str) -> list[str]:
    """Move every entry of ``staged_dir`` into ``output_dir``, each with one atomic rename (``os.replace``);
    a sub-folder (a processor's tokenizer folders, say) replaces an older one of that name as
    :func:`replace_folder` does. Returns the names moved."""
    os.makedirs(output_dir, exist_ok=True)
    names = sorted(os.listdir(staged_dir))
    for name in names:
        source, target = os.path.join(staged_dir, name), os.path.join(output_dir, name)
        if os.path.isdir(source):
            replace_folder(source, target, os.path.join(staged_dir, f"{name}.replaced"))
        else:
            os.replace(source, target)
    return names


def checkpoint_folders(output_dir: str) -> list[str]:
    """``checkpoint-N`` folders directly in ``output_dir``, oldest step first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(match.group(1)), name) for name in os.listdir(output_dir)
             if (match := CHECKPOINT_NAME.match(name)) and os.path.isdir(os.path.join(output_dir, name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def last_checkpoint(output_dir: str) -> str | None:
    folders = checkpoint_folders(output_dir)
    return folders[-1] if folders else None


def checkpoint_step(folder: str) -> int:
    """The global step a checkpoint was saved at (its ``trainer_state.json``; -1 when unreadable)."""
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as handle:
            return int(json.load(handle)["global_step"])
    except (OSError, ValueError, KeyError):
        return -1


def finish_complete_run(trainer, checkpoint: str) -> int:
    """A rerun of a run whose last checkpoint is its last step: write that checkpoint's model as the
    final model (resuming would take a step past ``max_steps``)."""
    print(f"fourm-hf train: {checkpoint} is the last step (training.max_steps); the run is complete, writing its "
          "model", file=sys.stderr)
    if trainer.args.should_save:
        clean_staging(trainer.args.output_dir)
    trainer._load_from_checkpoint(checkpoint)
    trainer.save_model(trainer.args.output_dir)
    return 0


def saved_settings(output_dir: str) -> dict | None:
    """The settings an earlier run wrote into ``output_dir`` (None when there are none)."""
    path = os.path.join(output_dir, SAVED_CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def save_settings(settings: Mapping, output_dir: str) -> str:
    """Write the resolved config next to the checkpoints (atomically); returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, SAVED_CONFIG_NAME)
    handle = tempfile.NamedTemporaryFile("w", dir=output_dir, suffix=".tmp", delete=False, encoding="utf-8")
    with handle:
        yaml.safe_dump(dict(settings), handle, sort_keys=False)
    os.replace(handle.name, path)
    return path


def rerun_resume_point(output_dir: str, saved_settings: dict | None, settings: dict, overwrite: bool) -> str | None:
    """What a ``fourm-hf train`` run without ``--resume-from-checkpoint`` starts from.

    No checkpoints: from step 0 (None). Checkpoints of a run with the same settings: the last one.
    Checkpoints of other settings: a ValueError naming ``--overwrite-output-dir``. With ``overwrite``
    the checkpoints are deleted and the run starts from step 0."""
    folders = checkpoint_folders(output_dir)
    if overwrite:
        for folder in folders:
            shutil.rmtree(folder)
        clean_staging(output_dir)
        return None
    if not folders:
        return None
    if saved_settings is not None and saved_settings != settings:
        changed = sorted(f"{section}.{key}" for section in set(settings) | set(saved_settings)
                         for key in set(settings.get(section) or {}) | set(saved_settings.get(section) or {})
                         if (settings.get(section) or {}).get(key) != (saved_settings.get(section) or {}).get(key))
        raise ValueError(f"{output_dir} holds checkpoints of a run with other settings ({', '.join(changed) or 'sections'} "
                         "differ), so it cannot resume them; pass --overwrite-output-dir to delete them and start "
                         "again, or choose another --output-dir.")
    return folders[-1]


__all__ = ["SAVED_CONFIG_NAME", "STAGING_DIR", "checkpoint_folders", "checkpoint_step", "finish_complete_run",
           "save_settings", "saved_settings", "clean_staging", "last_checkpoint", "publish_checkpoint",
           "rerun_resume_point", "staging_root"]
