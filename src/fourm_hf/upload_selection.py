"""Which files of a checkpoint folder go to the Hub: what a user loads, never a pickle.

A folder is uploaded as its safetensors weights, JSON configs, text files (model card, vocabularies)
and remote code (``.py``), at the top and in subfolders (the processor's tokenizer folders).
Left out: intermediate ``checkpoint-N`` folders, hidden files and folders, TensorBoard ``runs/``,
and the Trainer's own state (``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``, ``rng_state*.pth``,
``training_args.bin``; train-tokenizer's ``checkpoint.pt``), which are pickles nobody loads from a model repo. Any other pickle
(``pytorch_model.bin``, ``*.pt``, ...) is refused: loading a pickle runs code, so 4M checkpoints
are shared as safetensors only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

UPLOADED_SUFFIXES = (".safetensors", ".json", ".md", ".txt", ".py")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz")
# the Trainer's state, and train-tokenizer's resumable checkpoint.pt
TRAINER_STATE_FILES = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|training_args\.bin|checkpoint\.pt)$")
SKIPPED_FOLDERS = re.compile(r"^(checkpoint-\d+|runs|__pycache__|\..*)$")


def upload_files(folder: str | os.PathLike) -> list[Path]:
    """The files of ``folder`` to upload, relative to it, sorted. Raises ValueError for a pickle that is
    not Trainer state (a user would have to load it)."""
    folder = Path(folder)
    selected = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not SKIPPED_FOLDERS.match(name))
        for name in sorted(files):
            path = Path(root) / name
            relative = path.relative_to(folder)
            if name.startswith(".") or TRAINER_STATE_FILES.match(name):
                continue
            if name.endswith(PICKLE_SUFFIXES):
                raise ValueError(f"{path}: a pickle file; 4M checkpoints are uploaded as safetensors only (loading a "
                                 "pickle runs code). Save the model with save_pretrained, or remove the file.")
            if name.endswith(UPLOADED_SUFFIXES):
                selected.append(relative)
    return selected


__all__ = ["PICKLE_SUFFIXES", "UPLOADED_SUFFIXES", "upload_files"]
