"""Checks of one training sample against the model's layout, with errors naming the modality and field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .ids import SAMPLE_INDEX_FIELD
from .layout import ModalityLayout


def as_array(value) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def sample_index_of(sample) -> int:
    """The ``sample_index`` of a sample, checked (it seeds the sample's masks)."""
    if not isinstance(sample, Mapping):
        raise TypeError(f"A sample must be a dict of modality arrays, got {type(sample).__name__}.")
    if SAMPLE_INDEX_FIELD not in sample:
        raise ValueError(
            f"Sample is missing the {SAMPLE_INDEX_FIELD!r} field that seeds its masks; wrap the dataset with "
            f"fourm_hf.data.masking.with_sample_index(dataset)."
        )
    index = sample[SAMPLE_INDEX_FIELD]
    if isinstance(index, torch.Tensor):
        index = index.item()
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"sample {index!r}: field {SAMPLE_INDEX_FIELD!r} must be an int >= 0, got {index!r}.")
    return int(index)


def read_sample(sample: Mapping, layouts: Sequence[ModalityLayout], allow_missing: bool) -> dict[str, np.ndarray]:
    """Every modality's checked array of one sample, by modality name (module docstring of ``layout``)."""
    where = f"sample {sample_index_of(sample)}"
    arrays = {}
    for layout in layouts:
        value = sample.get(layout.field)
        if value is None:
            if allow_missing:
                continue
            raise ValueError(
                f"{where}: modality {layout.name!r} is missing (field {layout.field!r}); the config lists it. Add it to "
                f"the corpus, or pass allow_missing_modalities=True."
            )
        check = {"pixels": check_pixels, "sequence_embedding": check_sequence_embedding}.get(layout.kind, check_tokens)
        arrays[layout.name] = check(layout, value, where)
    return arrays


def check_pixels(layout: ModalityLayout, value, where: str) -> np.ndarray:
    """(C, S, S) float pixels of a pixels input at its own image size."""
    pixels = as_array(value)
    expected = (layout.num_channels, layout.image_size, layout.image_size)
    if pixels.shape != expected:
        raise ValueError(
            f"{where}: modality {layout.name!r} field {layout.field!r} has shape {pixels.shape}, expected {expected} "
            f"(channels, image_size, image_size)."
        )
    if pixels.dtype.kind != "f":
        raise TypeError(f"{where}: modality {layout.name!r} field {layout.field!r} must be float, got {pixels.dtype}.")
    return pixels


def check_sequence_embedding(layout: ModalityLayout, value, where: str) -> np.ndarray:
    """(N, C) float vectors, 1 <= N <= max_length, C = the modality's width (4096 for T5-XXL)."""
    vectors = as_array(value)
    if vectors.ndim != 2 or vectors.shape[1] != layout.num_channels or not 1 <= vectors.shape[0] <= layout.num_positions:
        raise ValueError(
            f"{where}: modality {layout.name!r} field {layout.field!r} has shape {vectors.shape}, expected (N, "
            f"{layout.num_channels}) with 1 <= N <= {layout.num_positions} (one {layout.num_channels}-wide vector "
            "per token)."
        )
    if vectors.dtype.kind != "f":
        raise TypeError(f"{where}: modality {layout.name!r} field {layout.field!r} must be float, got {vectors.dtype}.")
    return vectors


def check_tokens(layout: ModalityLayout, value, where: str) -> np.ndarray:
    """1-D int ids: a full grid for an image modality, 1..max_length ids for a sequence, inside the vocabulary."""
    tokens = as_array(value)
    name, field = layout.name, layout.field
    if tokens.ndim != 1:
        raise ValueError(f"{where}: modality {name!r} field {field!r} must be 1-D token ids, got shape {tokens.shape}.")
    if tokens.size and tokens.dtype.kind not in "iu":
        raise TypeError(f"{where}: modality {name!r} field {field!r} must hold integer ids, got dtype {tokens.dtype}.")
    tokens = tokens.astype(np.int64, copy=False)
    if layout.is_grid and len(tokens) != layout.num_positions:
        side = int(round(layout.num_positions**0.5))
        raise ValueError(
            f"{where}: modality {name!r} field {field!r} has {len(tokens)} tokens, expected {layout.num_positions} "
            f"(its {side}x{side} grid, raster order)."
        )
    if layout.kind == "sequence" and not 1 <= len(tokens) <= layout.num_positions:
        raise ValueError(
            f"{where}: modality {name!r} field {field!r} has {len(tokens)} tokens, expected 1..max_length = "
            f"{layout.num_positions} (the text ids followed by [EOS])."
        )
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= layout.vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"{where}: modality {name!r} field {field!r} has token id {bad}, outside the vocabulary [0, {layout.vocab_size})."
        )
    return tokens


def available_tokens(layout: ModalityLayout, array: np.ndarray, side: str) -> int:
    """Tokens a modality of this sample can give the input (``side="input"``) or target budget."""
    if layout.is_grid:
        return layout.num_positions
    return len(array) + (1 if side == "target" else 0)
