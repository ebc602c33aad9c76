"""Many scenes as a ``datasets`` dataset, rendered in atomically written, resumable shards; ``fourm-hf make-scenes``."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ...output_paths import check_output_dir, clean_stale_staging
from ..shards import quiet_datasets, shard_bounds, shard_name, start_sharded_run, unwritten_shards
from .render import _check_size, render_scene

_PARAMS_FILE = "make_scenes.json"


def scene_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th scene of a dataset made with ``seed`` (datasets made with
    different seeds do not share scenes)."""
    low, high = np.random.SeedSequence([seed, index]).generate_state(2)
    return int((int(high) << 31) ^ int(low))


def scene_features(size: int):
    """``datasets.Features`` of a scene dataset at ``size`` x ``size`` pixels."""
    from datasets import Array2D, Array3D, Features, Image, List, Value

    size = _check_size(size)
    return Features(
        {
            "rgb": Image(),
            "depth": Array2D((size, size), "float32"),
            "normal": Array3D((size, size, 3), "float32"),
            "semseg": Array2D((size, size), "uint8"),
            "boxes": List({"label": Value("string"), "box": List(Value("float32"), length=4)}),
            "caption": Value("string"),
            "seed": Value("int64"),
        }
    )


def _scene_row(seed: int, size: int) -> dict:
    from PIL import Image

    scene = render_scene(seed, size)
    return {
        "rgb": Image.fromarray(scene["rgb"]),
        "depth": scene["depth"],
        "normal": scene["normal"],
        "semseg": scene["semseg"],
        "boxes": scene["boxes"],
        "caption": scene["caption"],
        "seed": scene["seed"],
    }


def _write_shard(shards_dir: str, shard: int, num_shards: int, start: int, stop: int, size: int, seed: int, progress=None) -> int:
    """Render scenes ``start..stop-1`` and save them atomically as one shard; returns the number of scenes."""
    from datasets import Dataset

    rows = []
    for index in range(start, stop):
        rows.append(_scene_row(scene_seed(seed, index), size))
        if progress is not None:
            progress.update(1)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    final_dir = os.path.join(shards_dir, shard_name(shard, num_shards))
    temp_dir = f"{final_dir}.tmp-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    with quiet_datasets():
        Dataset.from_dict(columns, features=scene_features(size)).save_to_disk(temp_dir)
    os.replace(temp_dir, final_dir)
    return stop - start


# rgb uint8 x3, depth float32, normal float32 x3, semseg and instances uint8, with room for datasets' copies
BYTES_PER_PIXEL = 2 * (3 + 4 + 12 + 2)
MAX_SHARD_BYTES = 4 * 2**30


def _check_out_dir(out_dir: Path, params: dict) -> bool:
    """True if ``out_dir`` already holds the finished dataset for ``params``; raises if it holds anything else."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise ValueError(f"make-scenes: --out {out_dir} exists and is not a directory")
    params_file = out_dir / _PARAMS_FILE
    if params_file.is_file():
        existing = json.loads(params_file.read_text())
        if existing == params:
            return True
        raise ValueError(f"make-scenes: --out {out_dir} holds a scene dataset made with {existing}, not {params}; choose another directory")
    if any(out_dir.iterdir()):
        raise ValueError(f"make-scenes: --out {out_dir} exists and holds something other than a scene dataset; choose an empty or new directory")
    return False


def make_scene_dataset(
    num: int, size: int, out_dir, seed: int = 0, shard_size: int = 500, num_proc: int = 1, _stop_after_shards: int | None = None
):
    """Render ``num`` scenes at ``size`` pixels and save them with ``save_to_disk`` at ``out_dir``.

    Scenes are rendered in shards of ``shard_size``, each saved atomically under
    ``<out_dir>.shards/``; a rerun after a kill skips the finished shards and gives the same dataset
    as an uninterrupted run. The shards are then concatenated into ``out_dir`` (also atomically)
    and removed. Scene ``i`` has seed ``scene_seed(seed, i)``, stored in the ``seed`` column.
    If ``out_dir`` already holds the finished dataset for the same arguments it is loaded as is.

    Returns the ``datasets.Dataset`` loaded from ``out_dir`` (features: ``scene_features(size)``).
    ``_stop_after_shards`` (tests only) raises ``KeyboardInterrupt`` after that many new shards.
    """
    from datasets import concatenate_datasets, load_from_disk
    from tqdm.auto import tqdm

    for name, value, minimum in (("num", num, 1), ("shard_size", shard_size, 1), ("num_proc", num_proc, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"make-scenes: {name} must be an int >= {minimum}, got {value!r}")
    size = _check_size(size)
    if shard_size * size * size * BYTES_PER_PIXEL > MAX_SHARD_BYTES:
        raise ValueError(f"make-scenes: a shard of {shard_size} scenes at {size} px would hold "
                         f"{shard_size * size * size * BYTES_PER_PIXEL / 2**30:.1f} GiB in memory; lower --shard-size to at "
                         f"most {max(1, MAX_SHARD_BYTES // (size * size * BYTES_PER_PIXEL))}")
    out_dir = check_output_dir(out_dir, "make-scenes: --out")
    clean_stale_staging(out_dir)  # a kill during an earlier final save
    params = {"num": int(num), "size": size, "seed": int(seed)}
    if _check_out_dir(out_dir, params):
        return load_from_disk(str(out_dir))

    shards_dir = start_sharded_run(out_dir, {**params, "shard_size": int(shard_size)}, _PARAMS_FILE, "make-scenes")
    bounds = shard_bounds(num, shard_size)
    num_shards = len(bounds)
    todo = unwritten_shards(shards_dir, bounds, num_shards)
    already_done = num - sum(stop - start for _, start, stop in todo)
    if _stop_after_shards is not None:
        todo = todo[:_stop_after_shards]
    with tqdm(total=num, initial=already_done, desc="rendering scenes", unit="scene") as progress:
        if num_proc == 1:
            for shard, start, stop in todo:
                _write_shard(str(shards_dir), shard, num_shards, start, stop, size, seed, progress)
        else:
            with ProcessPoolExecutor(max_workers=num_proc) as pool:
                futures = [pool.submit(_write_shard, str(shards_dir), k, num_shards, a, b, size, seed) for k, a, b in todo]
                for future in futures:
                    progress.update(future.result())
    if _stop_after_shards is not None:
        raise KeyboardInterrupt(f"stopped after {len(todo)} shards (test hook)")

    shards = [load_from_disk(str(shards_dir / shard_name(k, num_shards))) for k in range(num_shards)]
    temp_out = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp_out, ignore_errors=True)
    with quiet_datasets():
        concatenate_datasets(shards).save_to_disk(str(temp_out))
    (temp_out / _PARAMS_FILE).write_text(json.dumps(params))
    os.replace(temp_out, out_dir)  # out_dir is absent or an empty directory (checked above)
    shutil.rmtree(shards_dir)
    return load_from_disk(str(out_dir))
