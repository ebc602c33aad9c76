"""Trainer glue: every sample's index (the key of its masking randomness) and the epoch callback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import TrainerCallback

from .ids import SAMPLE_INDEX_FIELD

if TYPE_CHECKING:
    from .collator import FourMMaskingCollator


class _IndexedDataset(torch.utils.data.Dataset):
    """Map-style dataset wrapper that adds ``sample_index`` = the item's index to each dict."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        sample = self.dataset[index]
        if not isinstance(sample, Mapping):
            raise TypeError(f"with_sample_index: item {index} is a {type(sample).__name__}, expected a dict.")
        return {**sample, SAMPLE_INDEX_FIELD: int(index)}


def with_sample_index(dataset):
    """Give every sample its row index as ``sample_index``, the key of its masking randomness.

    A ``datasets.Dataset`` gets a new column (kept in memory, no cache file); any other map-style
    dataset (``__getitem__`` returning dicts + ``__len__``) is wrapped. Do this *before* shuffling
    or splitting, so an index names the same sample forever.
    """
    import datasets

    if isinstance(dataset, datasets.Dataset):
        if SAMPLE_INDEX_FIELD in dataset.column_names:
            raise ValueError(f"Dataset already has a {SAMPLE_INDEX_FIELD!r} column.")
        return dataset.add_column(SAMPLE_INDEX_FIELD, np.arange(len(dataset), dtype=np.int64))
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(f"with_sample_index needs a map-style dataset, got {type(dataset).__name__}.")
    return _IndexedDataset(dataset)


class MaskingEpochCallback(TrainerCallback):
    """Tells the collator the epoch at the start of every epoch, so masks change between epochs.

    ``Trainer`` calls ``on_epoch_begin`` before it creates the epoch's data iterator, so dataloader
    workers (which copy the collator when the iterator is created) see the new epoch, as long as
    ``dataloader_persistent_workers`` is off. On resume, ``state.epoch`` (e.g. 1.5) floors to the
    epoch being resumed.
    """

    def __init__(self, collator: "FourMMaskingCollator"):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))
        return control
