"""``sam_edge``: the boundaries of the SAM instance masks, drawn at image size (no model of its own).

Design: the edges need the full-resolution instance masks, which the stored ``sam_instance`` column no
longer has (it keeps 64 x 64 crops). ``SamInstanceLabeller`` therefore hands them to the labellers after it,
for the same batch, under the private ``labels`` key ``SAM_MASKS_KEY`` (keys starting with ``_`` are dropped
before a shard is written, so nothing extra is stored and a shard's memory stays one batch of masks).

A pixel is an edge pixel when it belongs to some instance mask and at least one of its 4 neighbours does not
(the inner boundary of each mask; outside the image counts as inside, so the image border is not an edge);
``sam_edge`` is the union over all masks, uint8 {0, 1}.
"""

from __future__ import annotations

import numpy as np

from ..base import Labeller
from ..labellers.sam_instance import SAM_MASKS_KEY


def instance_edges(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool instance masks -> (H, W) uint8 {0, 1} union of their inner boundaries."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != tuple(size):
        raise ValueError(f"sam_edge: expected (N, {size[0]}, {size[1]}) instance masks, got shape {masks.shape}")
    if len(masks) == 0:
        return np.zeros(size, dtype=np.uint8)
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)), mode="edge")
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return (masks & ~interior).any(axis=0).astype(np.uint8)


class SamEdgeLabeller(Labeller):
    """``sam_edge`` from the instance masks of the ``SamInstanceLabeller`` that runs before it."""

    columns = ("sam_edge",)

    def features(self, size):
        from datasets import Array2D

        return {"sam_edge": Array2D((size, size), "uint8")}

    def label(self, images, labels):
        if SAM_MASKS_KEY not in labels:
            raise ValueError("sam_edge: edges are drawn from the SAM instance masks; add a sam_instance labeller (--sam-model) before it")
        return {"sam_edge": [instance_edges(masks, (image.height, image.width)) for image, masks in zip(images, labels[SAM_MASKS_KEY])]}

    def metadata(self):
        return {"source": "inner 4-neighbour boundaries of the sam_instance masks at image size, union"}
