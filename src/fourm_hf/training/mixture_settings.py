"""``data.train`` as a list of datasets: parsing, the checks before training, the stream and its collator.

One entry per dataset (every key is checked; an unknown one is a ``ValueError``)::

    data:
      train:
        - name: images                  # label in errors and logs (default: dataset<k>)
          path: corpora/images          # a save_to_disk folder (read locally), a write_parquet_shards
                                        # folder or hf://datasets/<owner>/<name>[@rev] (both streamed)
          modalities: [rgb, tok_rgb, caption]  # what it provides (default: every model modality)
          weight: 0.8                   # sampling weight (> 0): P(dataset k) = w_k / sum(w)
          masking: {strategy: 4m7}      # overrides of the global masking section for its samples
          split: train                  # the split of a DatasetDict folder
          shuffle_buffer: 1000          # streamed datasets: datasets' shuffle buffer (1: none)
        - {name: text, path: corpora/text, modalities: [caption], weight: 0.2,
           masking: {strategy: all2all, input_budget: 8, target_budget: 8}}

Checks, all before the first step (``ValueError`` naming ``data.train[k]`` and the dataset): unknown
keys; a weight that is not a number > 0; a declared modality the model does not have; a model
modality that no dataset declares; a shard (or an Arrow folder) without the column of a modality its
dataset declares; per-dataset budgets above the global ones (the batch's padded length); the first
``data.validate_samples`` samples of each dataset through its collator. A dataset declaring fewer
modalities than the model gets ``allow_missing_modalities``: the others get no tokens.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

from ..data.corpus import RGB_IMAGE_COLUMN
from ..data.masking import PIXEL_VALUES_FIELD, sample_field
from ..data.masking.mixture_collator import DATASET_INDEX_FIELD, MixtureCollator
from ..data.mixture import DEFAULT_SHUFFLE_BUFFER, ArrowSource, MixtureStream, StreamSource, mixture_dataset
from ..data.parquet_shards import is_shards_source, open_parquet_shards, shard_columns
from .corpus_checks import check_corpus, load_corpus

DATASET_KEYS = ("name", "path", "modalities", "weight", "masking", "split", "shuffle_buffer")
MIXTURE_ONLY_DATA_KEYS = ("repeat_sampling", "max_train_samples")


def is_mixture(train) -> bool:
    """True when ``data.train`` is a list of datasets or a streamed source (shards folder, ``hf://``)."""
    return isinstance(train, list) or (isinstance(train, str) and is_shards_source(train))


def parse_datasets(train, config, masking_keys) -> list[dict]:
    """Check the entries of ``data.train`` against the model; returns them with every key filled in."""
    if isinstance(train, str):
        train = [{"path": train}]
    if not train:
        raise ValueError("data.train is an empty list; give at least one dataset.")
    names = list(config.modality_names)
    entries = []
    for k, entry in enumerate(train):
        where = f"data.train[{k}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping with keys {list(DATASET_KEYS)}, got {entry!r}.")
        unknown = sorted(set(entry) - set(DATASET_KEYS))
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown} in {where}; a dataset accepts: {list(DATASET_KEYS)}.")
        name = str(entry.get("name") or f"dataset{k}")
        where = f"{where} ({name})"
        if not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"{where}: path must be a folder or hf://datasets/<owner>/<name>, got {entry.get('path')!r}.")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"{where}: weight must be a finite number > 0, got {weight!r}.")
        modalities = entry.get("modalities", names)
        if not isinstance(modalities, list) or not modalities or not all(isinstance(m, str) for m in modalities):
            raise ValueError(f"{where}: modalities must be a non-empty list of modality names, got {modalities!r}.")
        for modality in modalities:
            if modality not in names:
                raise ValueError(f"{where}: modality {modality!r} is not among the model's modalities {names}.")
        masking = dict(entry.get("masking") or {})
        bad = sorted(set(masking) - set(masking_keys))
        if bad:
            raise ValueError(f"Unknown key(s) {bad} in {where}.masking; it accepts: {sorted(masking_keys)}.")
        buffer = entry.get("shuffle_buffer", DEFAULT_SHUFFLE_BUFFER)
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"{where}: shuffle_buffer must be an int >= 1, got {buffer!r}.")
        entries.append({"name": name, "where": where, "path": entry["path"], "weight": float(weight),
                        "modalities": list(dict.fromkeys(modalities)), "masking": masking,
                        "split": entry.get("split", "train"), "shuffle_buffer": buffer})
    declared = set(itertools.chain.from_iterable(e["modalities"] for e in entries))
    uncovered = [m for m in names if m not in declared]
    if uncovered:
        raise ValueError(f"data.train: the model trains {uncovered} but no dataset declares them (declared: "
                         f"{sorted(declared)}); add a dataset that has them or remove them from the model.")
    return entries


def _needed_columns(entry: dict, config) -> dict[str, tuple[str, ...]]:
    """Modality -> the columns that can hold it (pixels: ``pixel_values`` or build-corpus's ``rgb_image``)."""
    needed = {}
    for modality in entry["modalities"]:
        column = sample_field(config, modality)
        needed[modality] = (column, RGB_IMAGE_COLUMN) if column == PIXEL_VALUES_FIELD else (column,)
    return needed


def _missing(needed: dict, columns) -> list[tuple[str, str]]:
    return [(modality, options[0]) for modality, options in needed.items() if not any(c in columns for c in options)]


def open_source(entry: dict, config):
    """The :class:`StreamSource` / :class:`ArrowSource` of one dataset, after checking its columns."""
    needed = _needed_columns(entry, config)
    path = entry["path"]
    if is_shards_source(path):
        files = shard_columns(path)
        for file, columns in files.items():
            missing = _missing(needed, columns)
            if missing:
                modality, column = missing[0]
                raise ValueError(f"{entry['where']}: shard {file} has no column {column!r} for modality {modality!r}, "
                                 f"which the dataset declares (its columns: {columns}).")
        present = [c for options in needed.values() for c in options if c in next(iter(files.values()))]
        return StreamSource(open_parquet_shards(path, columns=present), entry["shuffle_buffer"])
    if not Path(path).exists():
        raise ValueError(f"{entry['where']}: {path!r} does not exist (expected a save_to_disk folder, a folder of "
                         "Parquet shards or hf://datasets/<owner>/<name>).")
    corpus = load_corpus(path, entry["split"], f"train[{entry['name']}]")
    missing = _missing(needed, corpus.column_names)
    if missing:
        modality, column = missing[0]
        raise ValueError(f"{entry['where']}: {path} has no column {column!r} for modality {modality!r}, which the "
                         f"dataset declares (its columns: {corpus.column_names}).")
    keep = [c for options in needed.values() for c in options if c in corpus.column_names]
    if corpus.format["type"] != "custom":
        corpus = corpus.select_columns(keep)
    return ArrowSource(check_corpus(corpus, config, f"train[{entry['name']}]", allow_missing_modalities=True))


def build_mixture(entries: list[dict], config, global_masking: dict, make_collator, seed: int, world_size: int,
                  validate_samples: int | None):
    """``(train_dataset, collator)`` of a mixture: the ``datasets.IterableDataset`` of :func:`mixture_dataset`
    and a :class:`MixtureCollator`; the first ``validate_samples`` samples of each dataset are checked.

    ``make_collator(masking_settings)`` builds a :class:`FourMMaskingCollator` from a masking section.
    """
    packer = make_collator(global_masking)
    collators, sources = [], []
    for entry in entries:
        settings = {**global_masking, **entry["masking"]}
        if set(entry["modalities"]) != set(config.modality_names):
            settings["allow_missing_modalities"] = True
        try:
            collators.append(make_collator(settings))
        except ValueError as error:
            raise ValueError(f"{entry['where']}.masking: {error}") from None
        sources.append(open_source(entry, config))
    names = [e["name"] for e in entries]
    try:
        collator = MixtureCollator(collators, packer, [e["modalities"] for e in entries], names)
    except ValueError as error:
        raise ValueError(f"data.train: {error}") from None
    stream = MixtureStream(sources, [e["weight"] for e in entries], names, seed=seed)
    count = -1 if validate_samples in (None, -1) else int(validate_samples)
    for k, (entry, source) in enumerate(zip(entries, sources)):
        samples = source.iterate(0, 1, 0, 0)
        for index, sample in enumerate(samples if count < 0 else itertools.islice(samples, count)):
            try:
                collator.validate_sample({**sample, "sample_index": index, DATASET_INDEX_FIELD: k})
            except (ValueError, TypeError) as error:
                raise type(error)(f"{entry['where']}: {error}") from None
    return mixture_dataset(stream, world_size), collator


__all__ = ["DATASET_KEYS", "build_mixture", "is_mixture", "open_source", "parse_datasets"]
