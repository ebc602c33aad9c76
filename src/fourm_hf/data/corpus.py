"""Tokenize a labeled image dataset into the 4M training corpus: a ``datasets`` dataset of token arrays.

Input: a dataset with the scene schema of ``data/scenes.py`` (pseudo-labeled datasets use the same
one): ``rgb`` (image), ``depth`` (H, W) metres, ``normal`` (H, W, 3), ``semseg`` (H, W) class ids,
``boxes`` ``[{"label", "box"}]`` (normalised xyxy), ``caption`` (str). Columns may be missing; a
modality is written when its column is there and the processor can tokenize it.

Each source image gives ``crops`` rows (K crops, configurable). Crop ``k`` of image ``i`` is chosen
by the image processor with its own generator ``numpy.random.default_rng((seed, i, k))`` and is
SHARED by every modality of that row: the same pixel window of the RGB image, depth, normals and
segmentation, and the boxes are mapped into it. One row (``corpus_features``)::

    tok_rgb / tok_depth / tok_normal / tok_semseg   List(int32, length=G*G)  VQ-VAE ids, raster order
    caption                                        List(int32)  text ids + [EOS]
    det                                            List(int32)  ids of the boxes after the crop + [EOS]
    rgb_image                                      Array3D((S, S, 3), uint8)  the cropped RGB image
    source_index                                   int64   row of the source dataset
    crop_index                                     int32   k in 0..K-1
    crop_box                                       List(int32, length=4)  (left, top, right, bottom)
                                                   in source pixels, right/bottom exclusive

4M-21 (a processor of released tokenizers, ``docs/corpus-4m21.md``): a pseudo-labelled dataset's 4M-21
columns (``canny_edge``, ``sam_edge``, ``clip``, ``dinov2``, ``dinov2_global``, ``sam_instance``,
``human_poses``, ``color_palette``, ``metadata``, ``t5_caption``) become ``tok_canny_edge``, ...,
``sam_instance`` ... under the same shared crop (``corpus_columns.py``, ``corpus_instances.py``); a
column the processor has no tokenizer for is skipped and listed in ``corpus_info.json`` (``skipped``),
and ``modalities=[...]`` names the columns to write (one that cannot be written is an error). The
shared crop is then chosen on the ``rgb`` column, which the dataset must have.

The ``rgb`` pixels modality is stored compactly as the cropped uint8 image (4x smaller than float32
pixels); :func:`to_training_format` (applied by :func:`load_corpus` with ``set_transform`` / a lazy
``map``) turns it into ImageNet-normalised float32 ``pixel_values`` (3, S, S) on access. Those
differ from ``FourMProcessor(images=...)["pixel_values"]`` only by the uint8 rounding of the crop
(at most half a grey level). ``tok_rgb`` is encoded from the float crop, before that rounding.

Building (:func:`build_corpus`, ``fourm-hf build-corpus``) encodes in batches (``batch_size``
source images, i.e. ``batch_size * crops`` maps per VQ-VAE call), writes shards of ``shard_size``
source images atomically under ``<out>.shards/``, skips finished shards when rerun after a kill
(the result equals an uninterrupted run: shard and batch boundaries are fixed by the arguments),
then saves the concatenation with ``save_to_disk`` at ``out`` and removes the shards.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..output_paths import check_output_dir, clean_stale_staging
from ..processing.image_processing_fourm import IMAGENET_MEAN, IMAGENET_STD
from ..processing.processor_inputs import map_keys
from ..text.sequence_modalities import SEQUENCE_MODALITIES
from .corpus_columns import RELEASED_COLUMNS, released_column_plan, released_features, tokenize_released_columns
from .masking import with_sample_index
from .shards import quiet_datasets, shard_bounds, shard_name, start_sharded_run, unwritten_shards

CORPUS_INFO_FILE = "corpus_info.json"
PARAMS_FILE = "build_corpus.json"
RGB_IMAGE_COLUMN = "rgb_image"
CROP_MODES = ("random", "center", "none")
# Dense-map columns of the scene schema -> the image processor's argument for them.
MAP_COLUMNS = {"rgb": "images", "depth": "depth", "normal": "normal", "semseg": "semseg"}
RELEASED_COLUMNS_BY_NAME = {column: name for column, (name, _) in RELEASED_COLUMNS.items()}
# 4M-21 columns read as numpy arrays (the others, nested lists / dicts / JSON, come as Python objects)
ARRAY_COLUMNS = ("canny_edge", "sam_edge", "clip", "dinov2", "dinov2_global")


# ------------------------------------------------------------------------------------------ schema


def corpus_modalities(processor, column_names, modalities=None) -> dict:
    """What a corpus built from a dataset with ``column_names`` holds.

    Returns ``{"maps": [dense-map columns read], "tokens": [VQ-VAE modalities encoded from them],
    "caption": bool, "det": bool, "rgb_image": bool, "released": {4M-21 dataset column: corpus column}
    (``corpus_columns.py``), "skipped": {dataset column: why the processor cannot tokenize it}}``.
    ``modalities``: the corpus columns to write (default: every one the processor and the dataset allow);
    one that cannot be written is a ValueError naming it.
    """
    columns = set(column_names)
    released, skipped = released_column_plan(processor, columns)
    from_columns = set(released.values())
    maps = [column for column in MAP_COLUMNS if column in columns and (column == "rgb" or processor.vqvaes_for(column))]
    tokens = [name for name, vqvae in processor.vqvaes.items() if vqvae.config.target in maps
              and getattr(vqvae.config, "can_encode", True) and name not in from_columns]
    if not maps:
        raise ValueError(
            f"build-corpus: the dataset has none of the map columns {list(MAP_COLUMNS)} that the processor can use "
            f"(columns {sorted(columns)}, VQ-VAEs {sorted(processor.vqvaes)})"
        )
    found = {"maps": maps, "tokens": tokens, "caption": "caption" in columns, "det": "boxes" in columns,
             "rgb_image": "rgb" in columns, "released": released, "skipped": skipped}
    if modalities is not None:
        found = _select(found, list(modalities), columns)
    if found["released"] and "rgb" not in columns:
        raise ValueError(f"build-corpus: the dataset has 4M-21 columns {sorted(found['released'])} but no 'rgb' column; "
                         "the shared crop of a sample is chosen on its rgb image, so the dataset needs one")
    return found


def _select(found: dict, wanted: list, columns: set) -> dict:
    """Keep only the corpus columns ``wanted``; a name that cannot be written is a ValueError saying why."""
    writable = [*found["tokens"], *(["caption"] if found["caption"] else []), *(["det"] if found["det"] else []),
                *([RGB_IMAGE_COLUMN] if found["rgb_image"] else []), *found["released"].values()]
    source = {name: column for column, name in RELEASED_COLUMNS_BY_NAME.items()}
    for name in wanted:
        if name in writable:
            continue
        column = source.get(name)
        if column in found["skipped"]:
            why = f"the dataset has its column {column!r} but {found['skipped'][column]}"
        elif column is not None and column not in columns:
            why = f"the dataset has no {column!r} column"
        else:
            why = "not a corpus column this processor writes"
        raise ValueError(f"build-corpus: --modalities {name}: {why}; this dataset and processor can write {writable}")
    return {**found, "tokens": [n for n in found["tokens"] if n in wanted], "caption": found["caption"] and "caption" in wanted,
            "det": found["det"] and "det" in wanted, "rgb_image": found["rgb_image"] and RGB_IMAGE_COLUMN in wanted,
            "released": {c: n for c, n in found["released"].items() if n in wanted}}


def corpus_features(processor, modalities: dict, dataset_features=None):
    """Explicit ``datasets.Features`` of a corpus row (see the module docstring)."""
    from datasets import Array3D, Features, List, Value

    size = processor.image_size
    features = {}
    for name in modalities["tokens"]:
        grid = processor.vqvaes[name].config.grid_size
        features[name] = List(Value("int32"), length=grid * grid)
    if modalities["caption"]:
        features["caption"] = List(Value("int32"))
    if modalities["det"]:
        features["det"] = List(Value("int32"))
    features.update(released_features(processor, modalities.get("released", {}), dataset_features))
    if modalities["rgb_image"]:
        features[RGB_IMAGE_COLUMN] = Array3D((size, size, 3), "uint8")
    features["source_index"] = Value("int64")
    features["crop_index"] = Value("int32")
    features["crop_box"] = List(Value("int32"), length=4)
    return Features(features)


# --------------------------------------------------------------------------------------- tokenizing


def crop_generator(seed: int, source_index: int, crop_index: int) -> np.random.Generator:
    """The generator that picks crop ``crop_index`` of source image ``source_index``."""
    return np.random.default_rng((int(seed), int(source_index), int(crop_index)))


def _image_size(sample: dict) -> tuple[int, int]:
    for column in MAP_COLUMNS:
        if column in sample:
            return tuple(np.asarray(sample[column]).shape[:2])
    raise ValueError("build-corpus: a sample without any map column")


def tokenize_rows(processor, rows: dict, source_indices, modalities: dict, crops: int, seed: int, crop: str) -> dict:
    """Tokenize a batch of source rows into ``len(source_indices) * crops`` corpus rows (column lists).

    Args:
        rows: column -> list of values (maps as numpy arrays / PIL images), as a dataset slice gives them.
        source_indices: the dataset row of each entry.
    """
    samples = []  # one per (source, crop): the map arguments of the image processor
    crop_boxes, sources, crop_indices, box_lists = [], [], [], []
    for position, source_index in enumerate(source_indices):
        sample = {column: np.asarray(rows[column][position]) for column in modalities["maps"]}
        height, width = _image_size(sample)
        for crop_index in range(crops):
            if crop == "none":
                box = (0, 0, width, height)
            else:
                generator = crop_generator(seed, source_index, crop_index)
                box = processor.image_processor.choose_crop_box((height, width), crop, generator)
            samples.append(sample)
            crop_boxes.append(box)
            sources.append(int(source_index))
            crop_indices.append(crop_index)
            if modalities["det"]:
                box_lists.append(rows["boxes"][position])
    arguments = {MAP_COLUMNS[column]: [s[column] for s in samples] for column in modalities["maps"]}
    if modalities["det"]:
        arguments["boxes"] = [list(boxes or []) for boxes in box_lists]
    processed = processor.image_processor(**arguments, crop_box=np.asarray(crop_boxes, dtype=np.int64), flip=False)
    keys = map_keys()
    columns = {name: processor.encode_map(name, processed[keys[processor.vqvaes[name].config.target]]).numpy().astype(np.int32)
               for name in modalities["tokens"]}
    if modalities["caption"]:
        captions = []
        for position, source_index in enumerate(source_indices):
            text = rows["caption"][position]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"build-corpus: row {source_index} field 'caption' is {text!r}; expected non-empty text")
            captions.append(processor.tokenizer.encode_for_model(text, "caption", processor.max_text_length))
        columns["caption"] = [ids for ids in captions for _ in range(crops)]
    if modalities["det"]:
        columns["det"] = [
            processor.tokenizer.encode_boxes([{"label": b["label"], "box": b["box"]} for b in boxes],
                                             f"det (row {source})", processor.max_text_length)
            for boxes, source in zip(processed["boxes"], sources)
        ]
    if modalities.get("released"):
        positions = [position for position in range(len(source_indices)) for _ in range(crops)]
        sizes = [_image_size({"rgb": rows["rgb"][position]}) for position in range(len(source_indices))]
        columns.update(tokenize_released_columns(processor, rows, modalities["released"], positions, crop_boxes, sizes,
                                                 [f"row {source}" for source in sources]))
    if modalities["rgb_image"]:
        rgb = np.asarray(processed["tokenizer_rgb"]).transpose(0, 2, 3, 1)
        columns[RGB_IMAGE_COLUMN] = np.clip(np.round((rgb + 1.0) * 127.5), 0, 255).astype(np.uint8)
    columns["source_index"] = sources
    columns["crop_index"] = crop_indices
    columns["crop_box"] = [list(box) for box in crop_boxes]
    return columns


# --------------------------------------------------------------------------------- building (resumable)


def _concatenate_columns(parts: list[dict]) -> dict:
    merged = {}
    for name in parts[0]:
        values = []
        for part in parts:
            value = part[name]
            values.extend(list(value) if isinstance(value, np.ndarray) else value)
        merged[name] = values
    return merged


def _write_shard(dataset, processor, modalities, features, shards_dir: Path, shard: int, num_shards: int,
                 start: int, stop: int, crops: int, seed: int, crop: str, batch_size: int, progress) -> None:
    """Tokenize source rows ``start..stop-1`` in batches and save them atomically as one shard."""
    from datasets import Dataset

    columns = [c for c in MAP_COLUMNS if c in modalities["maps"]]
    columns += [c for c in ARRAY_COLUMNS if c in modalities.get("released", {})]
    view = dataset.with_format("numpy", columns=columns, output_all_columns=True)
    parts = []
    for batch_start in range(start, stop, batch_size):
        batch_stop = min(stop, batch_start + batch_size)
        rows = view[batch_start:batch_stop]
        parts.append(tokenize_rows(processor, rows, range(batch_start, batch_stop), modalities, crops, seed, crop))
        progress.update(batch_stop - batch_start)
    final_dir = shards_dir / shard_name(shard, num_shards)
    temp_dir = shards_dir / f"{final_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    Dataset.from_dict(_concatenate_columns(parts), features=features).save_to_disk(str(temp_dir))
    os.replace(temp_dir, final_dir)


def _check_params(path: Path, params: dict, what: str) -> None:
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != params:
            raise ValueError(f"build-corpus: {path.parent} holds {what} made with {existing}, not {params}; "
                             f"use the same arguments or another --out")


def build_corpus(dataset, processor, out_dir, crops: int = 1, batch_size: int = 16, shard_size: int = 1024,
                 seed: int = 0, crop: str = "random", progress: bool = True, modalities=None,
                 _stop_after_shards: int | None = None):
    """Tokenize ``dataset`` with ``processor`` into a corpus saved at ``out_dir``; returns it (``load_from_disk``).

    Args:
        dataset: a ``datasets.Dataset`` with the scene schema.
        processor: a :class:`FourMProcessor` (image processor, text tokenizer, VQ-VAEs).
        crops: K crops per source image (rows ``i*K .. i*K+K-1`` come from source ``i``).
        batch_size: source images per VQ-VAE batch.
        shard_size: source images per resumable shard.
        seed: crop ``k`` of image ``i`` uses ``crop_generator(seed, i, k)``.
        crop: ``"random"`` (RandomResizedCrop-style, the processor's ``crop_scale`` / ``crop_ratio``),
            ``"center"`` or ``"none"`` (whole image).
        modalities: the corpus columns to write (default: all that the dataset and the processor allow;
            ``corpus_modalities``).
    ``_stop_after_shards`` (tests only) raises ``KeyboardInterrupt`` after writing that many new shards.
    If ``out_dir`` already holds the finished corpus for the same arguments it is loaded as is.
    """
    from datasets import concatenate_datasets, load_from_disk
    from tqdm.auto import tqdm

    for name, value in (("crops", crops), ("batch_size", batch_size), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"build-corpus: {name} must be an int >= 1, got {value!r}")
    if crop not in CROP_MODES:
        raise ValueError(f"build-corpus: crop must be one of {CROP_MODES}, got {crop!r}")
    if len(dataset) == 0:
        raise ValueError("build-corpus: the dataset is empty")
    modalities = corpus_modalities(processor, dataset.column_names, modalities)
    features = corpus_features(processor, modalities, dataset.features)
    out_dir = check_output_dir(out_dir, "build-corpus: --out")
    clean_stale_staging(out_dir)  # a kill during an earlier final save
    # A rerun must see the same dataset: its length and the arguments are checked, not its content.
    params = {"num_sources": len(dataset), "crops": int(crops),
              "seed": int(seed), "crop": crop, "image_size": processor.image_size, "modalities": modalities}
    if out_dir.exists():
        _check_params(out_dir / PARAMS_FILE, params, "a corpus")
        if (out_dir / PARAMS_FILE).is_file():
            return load_from_disk(str(out_dir))
        if any(out_dir.iterdir()):
            raise ValueError(f"build-corpus: --out {out_dir} exists and is not a corpus; choose an empty or new directory")

    run_params = {**params, "shard_size": int(shard_size), "batch_size": int(batch_size)}
    shards_dir = start_sharded_run(out_dir, run_params, PARAMS_FILE, "build-corpus")
    total = len(dataset)
    bounds = shard_bounds(total, shard_size)
    num_shards = len(bounds)
    todo = unwritten_shards(shards_dir, bounds, num_shards)
    done = total - sum(stop - start for _, start, stop in todo)
    if _stop_after_shards is not None:
        todo = todo[:_stop_after_shards]
    with quiet_datasets():  # our bar counts images; hide the per-save bars
        with tqdm(total=total, initial=done, desc="build-corpus", unit="image", disable=not progress) as bar:
            for shard, start, stop in todo:
                _write_shard(dataset, processor, modalities, features, shards_dir, shard, num_shards,
                             start, stop, crops, seed, crop, batch_size, bar)
        if _stop_after_shards is not None:
            raise KeyboardInterrupt(f"stopped after {len(todo)} shards (test hook)")
        shards = [load_from_disk(str(shards_dir / shard_name(k, num_shards))) for k in range(num_shards)]
        temp_out = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
        shutil.rmtree(temp_out, ignore_errors=True)
        concatenate_datasets(shards).save_to_disk(str(temp_out))
    info = {"crops": int(crops), "image_size": processor.image_size, "image_mean": processor.image_processor.image_mean,
            "image_std": processor.image_processor.image_std, "modalities": modalities}
    (temp_out / CORPUS_INFO_FILE).write_text(json.dumps(info, indent=2))
    (temp_out / PARAMS_FILE).write_text(json.dumps(params))
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked above)
    os.replace(temp_out, out_dir)
    shutil.rmtree(shards_dir)
    return load_from_disk(str(out_dir))


# ------------------------------------------------------------------------------------------- reading


def build_info(path) -> dict:
    """The ``modalities`` entry of a built corpus's ``corpus_info.json`` (what was written and skipped)."""
    return json.loads((Path(path) / CORPUS_INFO_FILE).read_text())["modalities"]


def to_training_format(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD):
    """A batched transform: ``rgb_image`` uint8 (S, S, 3) -> ``pixel_values`` float32 (3, S, S),
    ``(x / 255 - mean) / std``; token columns become int64 numpy arrays. Other columns pass through."""
    mean = np.asarray(image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(image_std, dtype=np.float32).reshape(1, 3, 1, 1)

    def transform(batch: dict) -> dict:
        out = {}
        for name, values in batch.items():
            if name == RGB_IMAGE_COLUMN:
                images = np.asarray(values, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
                out["pixel_values"] = list((images - mean) / std)
            elif name in ("crop_box", "caption", "det", *SEQUENCE_MODALITIES) or name.startswith("tok_"):
                out[name] = [np.asarray(value, dtype=np.int64) for value in values]
            elif name == "t5_caption":
                out[name] = [np.asarray(value, dtype=np.float32) for value in values]
            else:
                out[name] = values
        return out

    return transform


def load_corpus(path, streaming: bool = False, rank: int | None = None, world_size: int | None = None,
                training_format: bool = True, add_sample_index: bool = False):
    """Open a corpus written by :func:`build_corpus`.

    Args:
        streaming: return an ``IterableDataset`` over the Arrow files (nothing loaded up front).
        rank / world_size: keep only this node's part (``datasets.distributed.split_dataset_by_node``);
            the parts of all ranks are disjoint and cover the corpus.
        training_format: apply :func:`to_training_format` (``pixel_values`` on access).
        add_sample_index: add the ``sample_index`` column that seeds the masking collator: the row
            index of the whole corpus (``masking.with_sample_index``, applied before the split by
            node); streaming computes the same number as ``source_index * crops + crop_index``.
    """
    from datasets import load_dataset, load_from_disk
    from datasets.distributed import split_dataset_by_node

    path = Path(path)
    info_file = path / CORPUS_INFO_FILE
    if not info_file.is_file():
        raise ValueError(f"load_corpus: {path} has no {CORPUS_INFO_FILE}; not a corpus written by build_corpus")
    info = json.loads(info_file.read_text())
    if (rank is None) != (world_size is None):
        raise ValueError("load_corpus: give both rank and world_size, or neither")
    if world_size is not None and not 0 <= rank < world_size:
        raise ValueError(f"load_corpus: rank must be in [0, world_size={world_size}), got {rank}")
    transform = to_training_format(info["image_mean"], info["image_std"]) if training_format else None
    if not streaming:
        corpus = load_from_disk(str(path))
        if add_sample_index:
            corpus = with_sample_index(corpus)
        if world_size is not None:
            corpus = split_dataset_by_node(corpus, rank=rank, world_size=world_size)
        if transform is not None:
            corpus.set_transform(transform)
        return corpus
    files = sorted(glob.glob(str(path / "data-*.arrow")))
    if not files:
        raise ValueError(f"load_corpus: no data-*.arrow files in {path}")
    features = load_from_disk(str(path)).features  # memory-mapped: reads only the schema
    corpus = load_dataset("arrow", data_files=files, split="train", streaming=True, features=features)
    if add_sample_index:
        crops = int(info["crops"])
        corpus = corpus.map(lambda row: {"sample_index": row["source_index"] * crops + row["crop_index"]})
    if world_size is not None:
        corpus = split_dataset_by_node(corpus, rank=rank, world_size=world_size)
    if transform is not None:
        corpus = corpus.map(transform, batched=True)
    return corpus


__all__ = ["build_corpus", "corpus_features", "crop_generator", "load_corpus", "to_training_format", "tokenize_rows"]
