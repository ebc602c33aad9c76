"""The 4M-21 columns of a pseudo-labelled dataset in a corpus: which tokenizer serves each, and how.

:data:`RELEASED_COLUMNS` maps a dataset column (the ``pseudo-label`` column contract) to the corpus
column it becomes and how it is read:

==================  ==================  =====================================================================
dataset column      corpus column       how (``processor`` = the ``FourMProcessor`` of released tokenizers)
==================  ==================  =====================================================================
``canny_edge``      ``tok_canny_edge``  (H, W) {0, 1}, cropped with the shared crop (nearest), then the
``sam_edge``        ``tok_sam_edge``    processor's ``edges=`` (the released edge DiVAE)
``clip``            ``tok_clip``        (h, w, C) feature map on the labeller's patch grid, cropped ON THE
``dinov2``          ``tok_dinov2``      GRID (below) to the tokenizer's G x G grid, then the released
                                        feature-map ViT VQ-VAE (no vision model is run)
``dinov2_global``   ``tok_dinov2_global`` (1, C) or (C,) vector: the processor's ``vectors=`` (MLP tokenizer)
``sam_instance``    ``sam_instance``    ``corpus_instances.py``: crop, SAM-instance VQ-VAE, then the
``human_poses``     ``human_poses``     processor's ``sam_instance=`` / ``human_poses=`` serialisations
``color_palette``   ``color_palette``   list of (r, g, b) bins: the processor's ``color_palette=``
``metadata``        ``metadata``        JSON ``{key: bin}``: the processor's ``metadata=`` (names -> the
                                        reference's key ids, ``text_serialization.METADATA_KEYS``)
``t5_caption``      ``t5_caption``      (N, d) float16 T5 states of the caption, stored as they are
==================  ==================  =====================================================================

A column is served when the processor has its tokenizer: an edge / feature / vector tokenizer in
``processor.vqvaes`` under the corpus column's name, the pose / SAM-instance tokenizer in
``processor.sequence_tokenizers``; palette, metadata and T5 states need only the text tokenizer.

Feature maps on the grid: the crop box (pixels of the H x W image) becomes the box
``(left * w / W, top * h / H, right * w / W, bottom * h / H)`` on the h x w patch grid, and that
window is resampled to G x G with PIL's bilinear filter (area-aware when shrinking). This is exact
(the stored grid itself) when the window is the whole grid and h = w = G, e.g. ``--crop none`` on a
grid labelled at the tokenizer's size; any other crop interpolates between patch features, which the
reference does not do (it extracts features per crop). Global embeddings, palettes and metadata
describe the whole labelled image and are not cropped (the reference does not crop them either).
Batches: per corpus batch each tokenizer runs once on all rows (edges, feature maps, vectors, masks, poses).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from ..processing.image_modalities import resize_float, resize_ids
from ..processing.tokenizer_placement import placed
from ..text.sequence_modalities import SEQUENCE_MAX_LENGTHS, id_split_for, to_text
from ..text.text_serialization import METADATA_KEYS
from .corpus_instances import crop_human_poses, crop_sam_instances, human_pose_entries, sam_instance_points

# dataset column -> (corpus column, how it is served)
RELEASED_COLUMNS = {
    "canny_edge": ("tok_canny_edge", "edge"), "sam_edge": ("tok_sam_edge", "edge"),
    "clip": ("tok_clip", "feature"), "dinov2": ("tok_dinov2", "feature"),
    "dinov2_global": ("tok_dinov2_global", "vector"),
    "sam_instance": ("sam_instance", "sequence_tokenizer"), "human_poses": ("human_poses", "sequence_tokenizer"),
    "color_palette": ("color_palette", "text"), "metadata": ("metadata", "text"),
    "t5_caption": ("t5_caption", "embedding"),
}


# ------------------------------------------------------------------------------------------ the plan


def why_not_served(processor, column: str) -> str | None:
    """Why ``processor`` cannot tokenize dataset ``column`` (None: it can)."""
    name, how = RELEASED_COLUMNS[column]
    if how in ("text", "embedding"):
        return None
    if how == "sequence_tokenizer":
        if name not in (getattr(processor, "sequence_tokenizers", None) or {}):
            return f"the processor has no {name} tokenizer (processor.sequence_tokenizers)"
        return None
    vqvae = processor.vqvaes.get(name)
    kind = None if vqvae is None else vqvae.config.input_kind
    if kind != how:
        found = "none" if vqvae is None else f"a {kind} tokenizer"
        return f"the processor has no {how} tokenizer for {name} (found {found})"
    return None


def released_column_plan(processor, column_names, wanted=None) -> tuple[dict, dict]:
    """``({dataset column: corpus column} served, {dataset column: why not} skipped)`` for the dataset's columns."""
    present = [column for column in RELEASED_COLUMNS if column in set(column_names)]
    served, skipped = {}, {}
    for column in present:
        reason = why_not_served(processor, column)
        if reason is None:
            served[column] = RELEASED_COLUMNS[column][0]
        else:
            skipped[column] = reason
    return served, skipped


def released_features(processor, plan: dict, dataset_features) -> dict:
    """``datasets`` features of the corpus columns of ``plan``."""
    from datasets import List, Value

    features = {}
    for column, name in plan.items():
        how = RELEASED_COLUMNS[column][1]
        if how == "embedding":
            features[name] = dataset_features[column]
        elif how in ("text", "sequence_tokenizer"):
            features[name] = List(Value("int32"))
        else:
            features[name] = List(Value("int32"), length=int(processor.vqvaes[name].config.num_tokens))
    return features


# ------------------------------------------------------------------------------------------ tokenizing


def tokenize_released_columns(processor, rows: dict, plan: dict, positions, crop_boxes, sizes, where) -> dict:
    """The corpus columns of ``plan`` for one batch.

    Args:
        rows: dataset column -> list of values (one per source row of the batch).
        positions: for each corpus row, its source row's position in ``rows``.
        crop_boxes: for each corpus row, its crop (left, top, right, bottom) in source pixels.
        sizes: (H, W) of each source row (its rgb image).
        where: for each corpus row, a name for errors (``"row 7"``).
    """
    columns = {}
    for column, name in plan.items():
        how = RELEASED_COLUMNS[column][1]
        values = [rows[column][p] for p in positions]
        labels = [f"build-corpus: {where[i]} column {column!r}" for i in range(len(positions))]
        row_sizes = [sizes[p] for p in positions]
        if how == "edge":
            columns[name] = _edge_ids(processor, name, values, crop_boxes, row_sizes, labels)
        elif how == "feature":
            columns[name] = _feature_ids(processor, name, values, crop_boxes, row_sizes, labels)
        elif how == "vector":
            columns[name] = _vector_ids(processor, name, values, labels)
        elif how == "embedding":
            columns[name] = [_embedding(value, label) for value, label in zip(values, labels)]
        elif column == "sam_instance":
            cropped = [crop_sam_instances(v, s, b, label) for v, s, b, label in zip(values, row_sizes, crop_boxes, labels)]
            entries = sam_instance_points(cropped, processor.sequence_tokenizers[name], processor.tokenizer.coord_bins)
            columns[name] = _sequence_ids(processor, name, [_fit_sam_points(processor.tokenizer, e) for e in entries])
        elif column == "human_poses":
            cropped = [crop_human_poses(v, s, b, label) for v, s, b, label in zip(values, row_sizes, crop_boxes, labels)]
            entries = human_pose_entries(cropped, processor.sequence_tokenizers[name], processor.tokenizer.coord_bins)
            columns[name] = _sequence_ids(processor, name, entries, empty_text="none")
        elif column == "metadata":
            columns[name] = _sequence_ids(processor, name, [_metadata(v, label) for v, label in zip(values, labels)])
        else:
            columns[name] = _sequence_ids(processor, name, [_palette(v, label) for v, label in zip(values, labels)])
    return columns


def _edge_ids(processor, name, values, crop_boxes, sizes, labels) -> np.ndarray:
    maps = []
    for value, box, size, label in zip(values, crop_boxes, sizes, labels):
        edge = np.asarray(value)
        if edge.shape != tuple(size) or not np.isin(edge, (0, 1)).all():
            raise ValueError(f"{label}: expected a {size[0]}x{size[1]} map of 0 / 1 (the rgb image's size), got shape "
                             f"{edge.shape} with values {np.unique(edge)[:5].tolist()}")
        maps.append(resize_ids(edge.astype(np.int64), box, processor.image_size).astype(np.float32))
    ids = processor.encode_vectors({name: np.stack(maps)}, "edge")[name]
    return ids.numpy().astype(np.int32)


def crop_feature_grid(features: np.ndarray, crop_box, size, grid: int) -> np.ndarray:
    """(h, w, C) features of an (H, W) image -> (C, grid, grid) float32 of the crop's window (module docstring)."""
    height, width = size
    rows, cols = features.shape[:2]
    left, top, right, bottom = crop_box
    window = (left * cols / width, top * rows / height, right * cols / width, bottom * rows / height)
    resized = resize_float(features.astype(np.float32), window, grid, Image.Resampling.BILINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def _inner_tokenizer(vqvae):
    """The released model of a ReleasedModalityTokenizer (loading a lazy one)."""
    return (vqvae.load() if hasattr(vqvae, "load") else vqvae).tokenizer


def _feature_ids(processor, name, values, crop_boxes, sizes, labels) -> np.ndarray:
    vqvae = processor.vqvaes[name]
    model = _inner_tokenizer(vqvae)
    channels, grid = int(model.config.n_channels), int(vqvae.config.grid_size)
    batch = []
    for value, box, size, label in zip(values, crop_boxes, sizes, labels):
        features = np.asarray(value)
        if features.ndim != 3 or features.shape[-1] != channels or not np.isfinite(features).all():
            raise ValueError(f"{label}: expected a finite (h, w, {channels}) feature map (the width the {name} tokenizer "
                             f"reads), got shape {features.shape}")
        batch.append(crop_feature_grid(features, box, size, grid))
    with placed(vqvae, getattr(processor, "_offload_device", None)), torch.inference_mode():
        device = next(model.parameters()).device
        ids = model.encode(torch.from_numpy(np.stack(batch)).to(device))
    return ids.reshape(ids.shape[0], -1).cpu().numpy().astype(np.int32)


def _vector_ids(processor, name, values, labels) -> np.ndarray:
    vectors = []
    for value, label in zip(values, labels):
        vector = np.asarray(value, dtype=np.float32)
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim != 1:
            raise ValueError(f"{label}: expected one vector, (C,) or (1, C), got shape {vector.shape}")
        vectors.append(vector)
    ids = processor.encode_vectors({name: np.stack(vectors)})[name]
    return ids.numpy().astype(np.int32)


def _embedding(value, label) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[0] < 1 or not np.isfinite(array.astype(np.float32)).all():
        raise ValueError(f"{label}: expected a finite (N, d) array of T5 states with N >= 1, got shape {array.shape}")
    return array.astype(np.float16)


def _metadata(value, label) -> dict:
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as error:
        raise ValueError(f"{label}: not JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected a JSON object {{key: bin}}, got {type(data).__name__}")
    ids = {}
    for key, bin_value in data.items():
        key_id = METADATA_KEYS.index(key) if key in METADATA_KEYS else (int(key) if str(key).isdigit() else None)
        if key_id is None:
            raise ValueError(f"{label}: unknown metadata key {key!r}; expected one of {list(METADATA_KEYS)} or a key id")
        if isinstance(bin_value, bool) or not isinstance(bin_value, int) or bin_value < 0:
            raise ValueError(f"{label}: {key!r} must be an integer bin >= 0, got {bin_value!r}")
        ids[key_id] = bin_value
    return ids


def _palette(value, label) -> list:
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"{label}: expected a list of (r, g, b) bins, got {type(value).__name__}")
    colors = []
    for color in value:
        color = np.asarray(color)
        if color.shape != (3,) or not np.issubdtype(color.dtype, np.integer):
            raise ValueError(f"{label}: a colour is 3 integer bins, got {color.tolist()}")
        colors.append(tuple(int(c) for c in color))
    return colors


def _fit_sam_points(tokenizer, points: list[dict]) -> list[dict]:
    """The query points of one row that fit ``sam_instance``'s released length, spread over the row.

    SAM's automatic masks at the reference's 7x7 query grid easily give more ids than the 290 the model reads
    (21 per mask). The reference samples points per sample; here a row keeps the largest evenly spaced
    subset of its points (in their grid order) whose serialisation + [EOS] fits, so no row is refused.
    """
    if not points:
        return points
    id_split = id_split_for(tokenizer)
    lengths = [len(tokenizer(to_text("sam_instance", [p], id_split), add_special_tokens=False)["input_ids"]) for p in points]
    budget = SEQUENCE_MAX_LENGTHS["sam_instance"] - 1  # [EOS]
    for count in range(len(points), 0, -1):
        keep = sorted(set(np.linspace(0, len(points) - 1, count).round().astype(int).tolist()))
        if sum(lengths[i] for i in keep) <= budget:
            return [points[i] for i in keep]
    return []


def _sequence_ids(processor, name: str, samples: list, empty_text: str | None = None) -> list[list[int]]:
    """Per sample the ids of the processor's serialisation of ``name`` + [EOS] (empty samples: ``empty_text``,
    else [EOS] alone, as ``det`` with no box)."""
    tokenizer = processor.tokenizer
    filled = [index for index, sample in enumerate(samples) if len(sample) > 0]
    rows = [None] * len(samples)
    if filled:
        padded = processor(**{name: [samples[i] for i in filled]}, return_tensors="np")[name]
        for index, row in zip(filled, padded):
            rows[index] = [int(i) for i in row[row != 0]]
    empty = [tokenizer.eos_token_id] if empty_text is None else tokenizer.encode_for_model(empty_text, name)
    return [row if row is not None else list(empty) for row in rows]


__all__ = ["RELEASED_COLUMNS", "crop_feature_grid", "released_column_plan", "released_features",
           "tokenize_released_columns", "why_not_served"]
