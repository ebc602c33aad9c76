"""Sharded, resumable, multi-process labelling (``pseudo_label_dataset``) and the merge of the shards."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ...output_paths import check_output_dir, clean_stale_staging
from ..shards import quiet_datasets, shard_bounds, shard_name, start_sharded_run, unwritten_shards
from .base import ORIGINAL_SIZE, Labeller
from .images import UnreadableImageError, resize_and_center_crop
from .source import ImageSource

_PARAMS_FILE = "pseudo_label.json"
_SKIPPED_FILE = "skipped.jsonl"


def output_features(source: ImageSource, labellers: list[Labeller], size: int, replace_existing: bool = False):
    """``datasets.Features`` of the labelled dataset: rgb, source, the labellers' columns, then the input's other columns."""
    from datasets import Features, Image, Value

    features = {"rgb": Image(), "source": Value("string")}
    passed_through = set()
    for labeller in labellers:
        _check_requirements(labeller, set(features) | set(source.extra_features))
        for name in getattr(labeller, "input_columns", ()):
            if name not in source.extra_features:
                raise ValueError(f"pseudo-label: the {type(labeller).__name__} labeller reads the input dataset's {name!r} column, "
                                 f"but --images {source.location} has no such column (its columns: {sorted(source.extra_features)})")
            passed_through.add(name)
        for name, feature in labeller.features(size).items():
            if name in features:
                raise ValueError(f"pseudo-label: two labellers write column {name!r}")
            features[name] = feature
    for name, feature in source.extra_features.items():
        if name in features:
            if not replace_existing and name not in passed_through:
                raise ValueError(f"pseudo-label: the input dataset already has a column {name!r} that a labeller writes; pass --replace-existing to replace it")
            continue
        features[name] = feature
    return Features(features)


_WRITERS = {"caption": "--caption-model", "depth": "--depth-model", "normal": "--depth-model", "semseg": "--segmentation-model",
            "boxes": "--detection-model"}


def _check_requirements(labeller: Labeller, available: set) -> None:
    """Raise ValueError when ``labeller`` needs a column that no earlier labeller and no input column provides."""
    for name in getattr(labeller, "requires", ()):
        if name not in available:
            writer = f" ({_WRITERS[name]} writes it)" if name in _WRITERS else ""
            what = ",".join(labeller.columns) or type(labeller).__name__
            raise ValueError(
                f"{what}: needs a {name!r} column, which no earlier labeller writes and the input does not have; add the "
                f"labeller that writes it{writer} or use an input dataset with a {name!r} column"
            )


def _label_items(source, labellers, indices, size, batch_size, progress=None):
    """Label items ``indices`` in batches; returns (rows as columns, skipped records)."""
    columns, skipped = {}, []
    for start in range(0, len(indices), batch_size):
        images, rows, original_sizes = [], {"source": [], "rgb": []}, []
        for index in indices[start : start + batch_size]:
            try:
                image, extra = source.read(index)
            except UnreadableImageError as error:
                skipped.append({"index": int(index), "source": source.sources[index], "error": str(error)})
                continue
            original_sizes.append(image.size)
            image = resize_and_center_crop(image, size)
            images.append(image)
            rows["source"].append(source.sources[index])
            rows["rgb"].append(image)
            for name, value in extra.items():
                rows.setdefault(name, []).append(value)
        if images:
            # what labellers may read besides the images: the input dataset's columns and the sizes before the crop
            labels = {name: list(values) for name, values in rows.items() if name not in ("source", "rgb")}
            labels[ORIGINAL_SIZE] = original_sizes
            labels["_sources"] = rows["source"]  # private: "_" keys are handed between labellers, never stored
            for labeller in labellers:
                produced = labeller.label(images, labels)
                for name, values in produced.items():
                    if len(values) != len(images):
                        raise ValueError(f"{name}: labeller {type(labeller).__name__} returned {len(values)} values for {len(images)} images")
                labels.update(produced)
            rows.update({name: values for name, values in labels.items() if not name.startswith("_")})
            rows.pop(ORIGINAL_SIZE)
            for name, values in rows.items():
                columns.setdefault(name, []).extend(values)
        if progress is not None:
            progress.update(len(indices[start : start + batch_size]))
    return columns, skipped


def _save_shard(shards_dir: Path, name: str, columns: dict, skipped: list, features) -> None:
    """Write one shard (dataset + its skipped.jsonl) to a temporary folder, then rename it into place."""
    from datasets import Dataset

    final_dir = shards_dir / name
    temp_dir = shards_dir / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    temp_dir.mkdir()
    if columns.get("source"):  # a shard of only unreadable images holds just its skipped.jsonl
        data = {key: columns.get(key, []) for key in features}
        with quiet_datasets():
            Dataset.from_dict(data, features=features).save_to_disk(str(temp_dir))
    (temp_dir / _SKIPPED_FILE).write_text("".join(json.dumps(record) + "\n" for record in skipped))
    os.replace(temp_dir, final_dir)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"pseudo-label: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def pseudo_label_dataset(
    images, out_dir, labellers: list[Labeller], size: int = 224, batch_size: int = 8, shard_size: int = 256,
    num_processes: int = 1, process_index: int = 0, image_column: str | None = None, replace_existing: bool = False,
    merge: bool | None = None, _stop_after_shards: int | None = None,
):
    """Label the images at ``images`` (a folder of image files, or a ``save_to_disk`` dataset) and save
    the result with ``save_to_disk`` at ``out_dir``.

    Items are cut into shards of ``shard_size`` in a fixed order (sorted file paths / row order); this
    process labels shards ``k`` with ``k % num_processes == process_index`` that are not done yet and
    saves each atomically under ``<out_dir>.shards/``. With ``merge`` (default: when
    ``num_processes == 1``) the shards are then merged into ``out_dir`` (see ``merge_shards``) and the
    merged ``datasets.Dataset`` is returned; otherwise returns None. A rerun with the same arguments
    continues where a killed run stopped. ``_stop_after_shards`` (tests only) raises
    ``KeyboardInterrupt`` after that many new shards.
    """
    from tqdm.auto import tqdm

    size = _check_int("size", size, 8)
    batch_size = _check_int("batch_size", batch_size, 1)
    shard_size = _check_int("shard_size", shard_size, 1)
    num_processes = _check_int("num_processes", num_processes, 1)
    process_index = _check_int("process_index", process_index, 0)
    if process_index >= num_processes:
        raise ValueError(f"pseudo-label: process_index must be < num_processes={num_processes}, got {process_index}")
    if not labellers:
        raise ValueError("pseudo-label: no labeller given")
    out_dir = check_output_dir(out_dir, "pseudo-label: --out")
    source = ImageSource(images, image_column)
    features = output_features(source, labellers, size, replace_existing)
    params = {
        "images": str(Path(images).resolve()), "num_items": len(source), "items_sha256": source.fingerprint(),
        "size": size, "batch_size": batch_size, "shard_size": shard_size,
        "labellers": {",".join(labeller.columns): {"labeller": type(labeller).__name__, **labeller.metadata()} for labeller in labellers},
        "features": features.to_dict(),
    }
    if (out_dir / _PARAMS_FILE).is_file() and json.loads((out_dir / _PARAMS_FILE).read_text()) == json.loads(json.dumps(params)):
        from datasets import load_from_disk

        return load_from_disk(str(out_dir))  # already finished with the same arguments
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"pseudo-label: --out {out_dir} exists and is not empty; choose a new or empty directory")
    shards_dir = start_sharded_run(out_dir, params, _PARAMS_FILE, "pseudo-label")
    bounds = shard_bounds(len(source), shard_size)
    num_shards = len(bounds)
    mine = [bound for bound in bounds if bound[0] % num_processes == process_index]
    todo = unwritten_shards(shards_dir, mine, num_shards)
    total_items = sum(stop - start for _, start, stop in mine)
    done_items = total_items - sum(stop - start for _, start, stop in todo)
    if _stop_after_shards is not None:
        todo = todo[:_stop_after_shards]
    with tqdm(total=total_items, initial=done_items, desc="pseudo-labeling", unit="img") as progress:
        for shard, start, stop in todo:
            indices = list(range(start, stop))
            columns, skipped = _label_items(source, labellers, indices, size, batch_size, progress)
            _save_shard(shards_dir, shard_name(shard, num_shards), columns, skipped, features)
    if _stop_after_shards is not None:
        raise KeyboardInterrupt(f"stopped after {len(todo)} shards (test hook)")
    if merge is None:
        merge = num_processes == 1
    return merge_shards(out_dir) if merge else None


def merge_shards(out_dir):
    """Concatenate the finished shards of ``<out_dir>.shards/`` into ``out_dir`` (atomically), with
    ``pseudo_label.json`` (run parameters and labeller metadata) and ``skipped.jsonl`` beside the data;
    warn with the number of skipped images; remove the shards. Returns the merged ``datasets.Dataset``."""
    from datasets import concatenate_datasets, load_from_disk

    out_dir = Path(out_dir)
    clean_stale_staging(out_dir)  # a kill during an earlier merge
    shards_dir = out_dir.parent / f"{out_dir.name}.shards"
    params_file = shards_dir / _PARAMS_FILE
    if not params_file.is_file():
        raise ValueError(f"pseudo-label: nothing to merge: {params_file} does not exist (run the labelling first)")
    params = json.loads(params_file.read_text())
    num_shards = (params["num_items"] + params["shard_size"] - 1) // params["shard_size"]
    names = [shard_name(k, num_shards) for k in range(num_shards)]
    missing = [name for name in names if not (shards_dir / name).is_dir()]
    if missing:
        raise ValueError(f"pseudo-label: cannot merge {shards_dir}: {len(missing)} of {num_shards} shards are not done yet (e.g. {missing[0]})")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"pseudo-label: --out {out_dir} exists and is not empty; choose a new or empty directory")

    skipped_lines = []
    for name in names:
        skipped_lines.extend((shards_dir / name / _SKIPPED_FILE).read_text().splitlines())
    nonempty = [load_from_disk(str(shards_dir / name)) for name in names if (shards_dir / name / "state.json").is_file()]
    if not nonempty:
        raise ValueError(f"pseudo-label: none of the {params['num_items']} images could be read; see {shards_dir}/*/{_SKIPPED_FILE}")
    merged = concatenate_datasets(nonempty)
    merged.info.description = json.dumps({"fourm_hf_pseudo_label": params["labellers"]})
    temp_out = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp_out, ignore_errors=True)
    with quiet_datasets():
        merged.save_to_disk(str(temp_out))
    (temp_out / _SKIPPED_FILE).write_text("".join(line + "\n" for line in skipped_lines))
    (temp_out / _PARAMS_FILE).write_text(json.dumps(params, indent=1, sort_keys=True))
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked above); os.replace onto a non-empty directory would fail
    os.replace(temp_out, out_dir)
    shutil.rmtree(shards_dir)
    if skipped_lines:
        warnings.warn(
            f"pseudo-label: skipped {len(skipped_lines)} of {params['num_items']} images that could not be read; "
            f"see {out_dir / _SKIPPED_FILE}",
            stacklevel=2,
        )
    return load_from_disk(str(out_dir))


def load_metadata(out_dir) -> dict:
    """Run parameters and labeller metadata of a labelled dataset, e.g.
    ``load_metadata(out)["labellers"]["semseg"]["semseg_classes"]`` or ``[...]["depth"]["depth_kind"]``
    (labellers are keyed by the columns they write)."""
    return json.loads((Path(out_dir) / _PARAMS_FILE).read_text())
