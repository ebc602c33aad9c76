"""A corpus as Parquet shards that ``datasets`` streams from a local folder or a Hub dataset repo.

Layout of a shards folder (the layout the Hub's dataset viewer and ``load_dataset`` understand)::

    <out>/data/train-00000-of-00004.parquet   rows 0 .. shard_size-1 of the corpus
    <out>/data/train-00001-of-00004.parquet   ...
    <out>/parquet_shards.json                 how it was cut: rows, shard_size, num_shards, columns
    <out>/corpus_info.json                    copied from a build-corpus folder (mean/std of rgb_image)

Why Parquet and not WebDataset tar (the reference's format): ``datasets`` streams Parquet natively,
reads only the columns asked for (column projection: a text-only dataset never downloads the RGB
crops), and keeps the exact ``datasets.Features`` in the file's schema metadata, so a streamed row
has the same types as the Arrow corpus it came from. A tar shard holds one file per sample and
modality, carries no schema and must be read whole.

Writing (:func:`write_parquet_shards`) is resumable: each shard is written to a temporary name and
renamed when complete; a rerun with the same arguments writes only the missing shards, a rerun with
other arguments is refused. Reading (:func:`open_parquet_shards`) streams the shards of a local
folder or of ``hf://datasets/<owner>/<name>[@revision]`` with ``load_dataset("parquet", ...,
streaming=True)``; build-corpus's uint8 ``rgb_image`` becomes ``pixel_values`` on access.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..output_paths import check_output_dir, clean_stale_staging, write_atomic
from .corpus import CORPUS_INFO_FILE, to_training_format
from .shards import differing_keys, load_dataset_split, quiet_datasets, shard_bounds

SHARDS_INFO_FILE = "parquet_shards.json"
HUB_PREFIX = "hf://datasets/"


def parquet_shard_name(shard: int, num_shards: int, split: str = "train") -> str:
    """``data/train-00002-of-00004.parquet``: the Hub's naming of a split's shards."""
    return f"data/{split}-{shard:05d}-of-{num_shards:05d}.parquet"


def write_parquet_shards(dataset, out_dir, shard_size: int = 1000, split: str = "train",
                         columns: list[str] | None = None, _stop_after_shards: int | None = None) -> Path:
    """Write ``dataset`` (a ``datasets.Dataset`` or a ``save_to_disk`` folder) as Parquet shards under ``out_dir``.

    Args:
        dataset: the corpus; a folder with ``corpus_info.json`` (``fourm-hf build-corpus``) has that
            file copied beside the shards.
        shard_size: rows per shard (the last one may be shorter). Each rank of a DDP run reads whole
            shards when their number is a multiple of the world size.
        split: the split to read from a ``DatasetDict`` folder, and the split name in the file names.
        columns: write only these columns (e.g. ``["caption"]`` for a text-only dataset); default all.
    Returns ``out_dir``. ``_stop_after_shards`` (tests only) raises ``KeyboardInterrupt`` after that
    many new shards.
    """
    source_dir = None
    if isinstance(dataset, (str, os.PathLike)):
        source_dir = Path(dataset)
        if not source_dir.is_dir():
            raise ValueError(f"write_parquet_shards: {str(dataset)!r} is not a folder saved with datasets.save_to_disk.")
        dataset = load_dataset_split(source_dir, split, "write_parquet_shards: dataset")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"write_parquet_shards: shard_size must be an int >= 1, got {shard_size!r}.")
    if columns is not None:
        dataset = _select_columns(dataset, columns)
    if len(dataset) == 0:
        raise ValueError("write_parquet_shards: the dataset is empty; there is nothing to write.")
    out_dir = check_output_dir(out_dir, "write_parquet_shards: out_dir")
    bounds = shard_bounds(len(dataset), shard_size)
    params = {"rows": len(dataset), "shard_size": shard_size, "num_shards": len(bounds), "split": split,
              "columns": list(dataset.column_names)}
    _start_or_check(out_dir, params)
    if source_dir is not None and (source_dir / CORPUS_INFO_FILE).is_file():
        write_atomic(out_dir / CORPUS_INFO_FILE, (source_dir / CORPUS_INFO_FILE).read_text())
    written = 0
    with quiet_datasets():
        for shard, start, stop in bounds:
            final = out_dir / parquet_shard_name(shard, len(bounds), split)
            clean_stale_staging(final)
            if final.is_file():
                continue
            if _stop_after_shards is not None and written == _stop_after_shards:
                raise KeyboardInterrupt(f"stopped after {written} shards (test hook)")
            temporary = final.with_name(f"{final.name}.tmp-{os.getpid()}")
            dataset.select(range(start, stop)).to_parquet(str(temporary))
            os.replace(temporary, final)
            written += 1
    return out_dir


def _select_columns(dataset, columns):
    """``dataset`` with only ``columns`` (in that order); unknown or repeated names are a ValueError."""
    if isinstance(columns, str) or not all(isinstance(name, str) for name in columns):
        raise TypeError(f"write_parquet_shards: columns must be a list of column names, got {columns!r}.")
    columns = list(columns)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"write_parquet_shards: columns must name at least one column, each once; got {columns}.")
    missing = [name for name in columns if name not in dataset.column_names]
    if missing:
        raise ValueError(f"write_parquet_shards: the dataset has no column {missing}; its columns are {sorted(dataset.column_names)}.")
    return dataset.select_columns(columns)


def _start_or_check(out_dir: Path, params: dict) -> None:
    """Create ``out_dir/data`` and its ``parquet_shards.json``, or check an existing one has ``params``."""
    info = out_dir / SHARDS_INFO_FILE
    if info.is_file():
        existing = json.loads(info.read_text())
        if existing != params:
            differing = differing_keys(existing, params)
            raise ValueError(f"write_parquet_shards: {out_dir} holds shards written with other {differing}; "
                             "use the same dataset, shard_size and columns, or another out_dir.")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise ValueError(f"write_parquet_shards: {out_dir} exists and holds no {SHARDS_INFO_FILE}; choose an empty or new folder.")
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    if not info.is_file():
        write_atomic(info, json.dumps(params, indent=1))


# ------------------------------------------------------------------------------------------- reading


def is_shards_source(path) -> bool:
    """True for ``hf://datasets/...`` and for a folder written by :func:`write_parquet_shards`."""
    path = str(path)
    return path.startswith(HUB_PREFIX) or (Path(path) / SHARDS_INFO_FILE).is_file()


def _split_hub_path(source: str) -> tuple[str, str | None]:
    """``hf://datasets/owner/name@rev`` -> (``owner/name``, ``rev``)."""
    repo = source[len(HUB_PREFIX):].strip("/")
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1:
        raise ValueError(f"{source!r}: a Hub dataset is hf://datasets/<owner>/<name>[@revision].")
    return repo, revision or None


def _read_json(source: str, filename: str) -> dict | None:
    """A JSON file at the root of a local shards folder or a Hub dataset repo (None when absent)."""
    if not source.startswith(HUB_PREFIX):
        path = Path(source) / filename
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo, revision = _split_hub_path(source)
    try:
        return json.loads(Path(hf_hub_download(repo, filename, repo_type="dataset", revision=revision)).read_text())
    except EntryNotFoundError:
        return None


def shard_files(source) -> list[str]:
    """The shard files of a source, sorted: local paths, or ``hf://datasets/owner/name@rev/data/...`` URLs.

    Raises ValueError when the folder is not a shards folder or some of its shards are missing.
    """
    source = str(source)
    info = _read_json(source, SHARDS_INFO_FILE)
    if info is None:
        raise ValueError(f"{source!r} holds no {SHARDS_INFO_FILE}: not a shards folder written by write_parquet_shards.")
    base = source.rstrip("/")
    files = [f"{base}/{parquet_shard_name(k, info['num_shards'], info['split'])}" for k in range(info["num_shards"])]
    if not source.startswith(HUB_PREFIX):
        missing = [name for name in files if not Path(name).is_file()]
        if missing:
            raise ValueError(f"{source!r}: {len(missing)} of {len(files)} shards are missing (first: {missing[0]}); "
                             "finish writing them with write_parquet_shards.")
    return files


def shard_columns(source) -> dict[str, list[str]]:
    """File -> the column names in its Parquet schema (only the footer of each file is read)."""
    import pyarrow.parquet as pq

    columns = {}
    for name in shard_files(source):
        if str(source).startswith(HUB_PREFIX):
            from huggingface_hub import HfFileSystem

            with HfFileSystem().open(name, "rb") as handle:
                columns[name] = list(pq.read_schema(handle).names)
        else:
            columns[name] = list(pq.read_schema(name).names)
    return columns


def open_parquet_shards(source, columns: list[str] | None = None, training_format: bool = True):
    """Stream a shards folder or Hub dataset repo: a ``datasets.IterableDataset`` with ``n_shards`` = its files.

    Args:
        source: a folder of :func:`write_parquet_shards` or ``hf://datasets/<owner>/<name>[@revision]``.
        columns: read only these columns (Parquet column projection); default all.
        training_format: make ``pixel_values`` of a build-corpus ``rgb_image`` on access, with the
            corpus's own mean/std (:func:`~fourm_hf.data.corpus.to_training_format`).
    """
    from datasets import load_dataset

    files = shard_files(source)
    kwargs = {"columns": list(columns)} if columns is not None else {}
    with quiet_datasets():
        stream = load_dataset("parquet", data_files={"train": files}, split="train", streaming=True, **kwargs)
    stream = stream.with_format("numpy")  # arrays, not nested lists
    if training_format:
        info = _read_json(str(source), CORPUS_INFO_FILE) or {}
        transform = to_training_format(*[info[k] for k in ("image_mean", "image_std") if k in info])
        stream = stream.map(transform, batched=True, batch_size=16)
    return stream


__all__ = ["is_shards_source", "open_parquet_shards", "parquet_shard_name", "shard_columns", "shard_files",
           "write_parquet_shards"]
