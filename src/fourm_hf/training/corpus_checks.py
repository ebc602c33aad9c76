"""The corpus of a pretraining run: opening a ``save_to_disk`` folder and checking it against the model.

:func:`check_corpus` runs before any training step: a column for every configured modality, not
empty, every token id inside its modality's vocabulary (one pass of pyarrow over the whole table).
"""

from __future__ import annotations

from pathlib import Path

from ..configuration_fourm import FourMConfig
from ..data.corpus import CORPUS_INFO_FILE, RGB_IMAGE_COLUMN, to_training_format
from ..data.corpus import load_corpus as load_built_corpus
from ..data.masking import PIXEL_VALUES_FIELD, sample_field


def corpus_columns(config: FourMConfig) -> dict[str, str]:
    """Modality name -> the corpus column it is read from."""
    return {name: sample_field(config, name) for name in config.modality_names}


def load_corpus(path, split: str | None, field: str):
    """A ``datasets.Dataset`` from a ``save_to_disk`` folder (a DatasetDict folder needs ``split``)."""
    import datasets


    if not Path(path).exists():
        raise ValueError(f"data.{field}: {str(path)!r} does not exist (expected a datasets.save_to_disk folder).")
    if (Path(path) / CORPUS_INFO_FILE).is_file():  # written by fourm-hf build-corpus: uint8 rgb_image + transform
        return load_built_corpus(path)
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise ValueError(
                f"data.{field}: {str(path)!r} is a DatasetDict with splits {list(loaded)}; set data.{field}_split to one."
            )
        loaded = loaded[split]
    return loaded


def check_corpus(corpus, config: FourMConfig, field: str, allow_missing_modalities: bool = False):
    """Columns, emptiness and (for a ``datasets.Dataset``) the id range of every token column.

    Returns the corpus restricted to the columns the collator reads, in numpy format.
    """
    import datasets


    if len(corpus) == 0:
        raise ValueError(f"data.{field}: the dataset is empty; there is nothing to train or evaluate on.")
    columns = corpus_columns(config)
    if not isinstance(corpus, datasets.Dataset):
        return corpus
    present = {}
    for name, column in columns.items():
        if column == PIXEL_VALUES_FIELD and column not in corpus.column_names and RGB_IMAGE_COLUMN in corpus.column_names:
            column = RGB_IMAGE_COLUMN  # build-corpus stores uint8 crops; to_training_format makes pixel_values
        if column in corpus.column_names:
            present[name] = column
        elif not allow_missing_modalities:
            raise ValueError(
                f"data.{field}: modality {name!r} has no column {column!r} in the corpus (columns: {corpus.column_names}); "
                f"add it or remove the modality from model.input_modalities/output_modalities."
            )
    if corpus._indices is None:  # a selected/shuffled view would also scan the rows it hides
        for name, column in present.items():
            spec = config.modality(name)
            if not spec.is_continuous:
                _check_id_range(corpus, column, spec.vocab_size, field, name)
    if corpus.format["type"] == "custom":  # the caller's transform (e.g. load_corpus's) makes the samples
        return corpus
    if RGB_IMAGE_COLUMN in present.values():
        return corpus.with_transform(to_training_format(), columns=list(present.values()))
    return corpus.with_format("numpy", columns=list(present.values()))


def _check_id_range(corpus, column: str, vocab_size: int, field: str, name: str) -> None:
    """Min and max id of a list column over the whole Arrow table (fast, no Python loop)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = corpus.data.column(column)
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        array = pc.list_flatten(array)
    if not pa.types.is_integer(array.type):
        raise ValueError(f"data.{field}: modality {name!r} column {column!r} must hold integer ids, got {array.type}.")
    extremes = pc.min_max(array).as_py()
    low, high = extremes["min"], extremes["max"]
    if low is not None and (low < 0 or high >= vocab_size):
        bad = low if low < 0 else high
        raise ValueError(
            f"data.{field}: modality {name!r} column {column!r} holds token id {bad}, outside the vocabulary "
            f"[0, {vocab_size}) of the model config."
        )


__all__ = ["check_corpus", "corpus_columns", "load_corpus"]
