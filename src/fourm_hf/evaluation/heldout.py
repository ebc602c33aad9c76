"""The fixed held-out scene set: rendered in memory, never written to disk.

Scene ``i`` of the held-out set is ``render_scene(scene_seed(HELDOUT_DATASET_SEED, i), size)``.
Training datasets made with ``fourm-hf make-scenes --seed s`` use ``scene_seed(s, i)``; seeds are
derived with ``numpy.random.SeedSequence([s, i])``, so datasets made with different ``s`` share no
scene. ``HELDOUT_DATASET_SEED`` is a large number that no training recipe uses (they use small
seeds, 0 by default); :func:`check_not_heldout` refuses a training dataset made with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from ..data.scenes import render_scene, scene_seed

HELDOUT_DATASET_SEED = 7_340_033
"""Dataset seed of the held-out scenes (a prime far from the small seeds training datasets use)."""

TRAIN_STATS_DATASET_SEED = 0
"""Dataset seed of the scenes rendered for the trivial baseline's statistics when no training
dataset is given: the default ``make-scenes`` seed, i.e. the training distribution itself."""


def render_scene_set(num_scenes: int, size: int, dataset_seed: int, desc: str = "rendering scenes") -> list[dict]:
    """``num_scenes`` scenes at ``size`` x ``size`` px; scene ``i`` uses ``scene_seed(dataset_seed, i)``.

    Returns ``render_scene`` dicts: ``rgb`` uint8 (S, S, 3), ``depth`` float32 (S, S) metres,
    ``normal`` float32 (S, S, 3), ``semseg`` uint8 (S, S), ``boxes``, ``caption``, ``seed``.
    """
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
        raise ValueError(f"num_scenes must be an int >= 1, got {num_scenes!r}")
    return [render_scene(scene_seed(dataset_seed, index), size)
            for index in tqdm(range(num_scenes), desc=desc, unit="scene")]


def heldout_scenes(num_scenes: int, size: int) -> list[dict]:
    """The first ``num_scenes`` held-out scenes at ``size`` px (the same scenes at every size)."""
    return render_scene_set(num_scenes, size, HELDOUT_DATASET_SEED, desc="rendering held-out scenes")


def check_not_heldout(dataset_dir) -> None:
    """Raise ``ValueError`` if the scene dataset at ``dataset_dir`` was made with the held-out seed."""
    params_file = Path(dataset_dir) / "make_scenes.json"
    if params_file.is_file() and json.loads(params_file.read_text()).get("seed") == HELDOUT_DATASET_SEED:
        raise ValueError(
            f"{dataset_dir}: this scene dataset was made with the held-out seed {HELDOUT_DATASET_SEED}; "
            "its scenes are the evaluation scenes, so they cannot serve as training data or statistics"
        )
