"""``sam_instance``: SAM's automatic instance masks, per query point, in 4M-21's instance format.

How the column is made:

1. ``SamModel`` generates the image's instance masks (``sam_masks.AutomaticMaskGenerator``: a grid of
   ``points_per_side`` x ``points_per_side`` point prompts, SAM's quality filters and NMS).
2. The query points are the reference's ``grid`` query points (its ``SAMInstanceTokTransform``, 7 per side):
   ``linspace(0, size, n + 2)[1:-1]`` on each axis, as whole pixels. Each query point lists every instance whose
   mask contains that pixel, best predicted IoU first (the reference shuffles points and masks when it writes
   the text at training time; the column keeps them in a fixed order). A point inside no mask has ``masks: []``.
3. Per mask: ``box`` = (xmin, ymin, xmax, ymax) of the mask's pixels as pixel edges (xmax = last column + 1),
   divided by the image size; ``mask`` = the mask cropped to that box, resized to 64 x 64 (nearest: pixel
   centres), packed with ``pack_instance_mask``. ``point`` = the query pixel's centre, (x + 0.5, y + 0.5) / size.

The full-resolution masks are also handed to later labellers of the same batch under the private key
``SAM_MASKS_KEY`` (``derived/sam_edge.py`` draws their edges); keys starting with ``_`` are never stored.
"""

from __future__ import annotations

import numpy as np

from ..base import Labeller, check_model_task
from .sam_masks import AutomaticMaskGenerator

SAM_MASK_SIZE = 64
"""Side of the stored instance masks (the released SAM-instance tokenizer reads 64 x 64 masks)."""

DEFAULT_QUERY_POINTS_PER_SIDE = 7
"""Query points per side of the reference's grid (``SAMInstanceTokTransform(points_per_side=7)``)."""

SAM_MASKS_KEY = "_sam_instance_masks"
"""Private ``labels`` key: per image, the (N, size, size) bool instance masks (not stored)."""


def pack_instance_mask(mask64) -> bytes:
    """A (64, 64) mask (any dtype, nonzero = inside) -> 512 bytes: ``np.packbits`` of it, row-major."""
    mask64 = np.asarray(mask64)
    if mask64.shape != (SAM_MASK_SIZE, SAM_MASK_SIZE):
        raise ValueError(f"sam_instance: a mask to pack must be ({SAM_MASK_SIZE}, {SAM_MASK_SIZE}), got shape {mask64.shape}")
    return np.packbits(mask64.astype(bool)).tobytes()


def unpack_instance_mask(data: bytes) -> np.ndarray:
    """512 bytes from ``pack_instance_mask`` -> (64, 64) uint8 mask with values {0, 1}."""
    expected = SAM_MASK_SIZE * SAM_MASK_SIZE // 8
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != expected:
        size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else type(data).__name__
        raise ValueError(f"sam_instance: a packed mask is {expected} bytes, got {size}")
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
    return bits.reshape(SAM_MASK_SIZE, SAM_MASK_SIZE)


def query_points(points_per_side: int, size: int) -> np.ndarray:
    """(points_per_side**2, 2) int (x, y) query pixels: the reference's grid, row-major."""
    steps = np.linspace(0, size, points_per_side + 2)[1:-1].astype(np.int64)
    ys, xs = np.meshgrid(steps, steps, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def _crop_resize(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (H, W) bool mask cropped to the pixel box (x0, y0, x1, y1), nearest-resized to (64, 64)."""
    x0, y0, x1, y1 = box
    rows = y0 + ((np.arange(SAM_MASK_SIZE) + 0.5) * (y1 - y0) / SAM_MASK_SIZE).astype(np.int64)
    cols = x0 + ((np.arange(SAM_MASK_SIZE) + 0.5) * (x1 - x0) / SAM_MASK_SIZE).astype(np.int64)
    return mask[rows][:, cols]


def instance_entries(masks: np.ndarray, query_points_per_side: int = DEFAULT_QUERY_POINTS_PER_SIDE) -> list[dict]:
    """(N, S, S) bool masks (best first) -> the ``sam_instance`` value of one image (format: module docstring)."""
    size = masks.shape[-1]
    encoded = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        packed = pack_instance_mask(_crop_resize(mask, box))
        encoded.append({"box": [float(v) / size for v in box], "mask": packed})
    entries = []
    for x, y in query_points(query_points_per_side, size):
        found = [encoded[k] for k in range(len(masks)) if masks[k, y, x]]
        entries.append({"point": [(x + 0.5) / size, (y + 0.5) / size], "masks": found})
    return entries


def sam_instance_feature():
    """The ``datasets`` feature of the ``sam_instance`` column."""
    from datasets import List, Value

    mask = {"box": List(Value("float32"), length=4), "mask": Value("binary")}
    return List({"point": List(Value("float32"), length=2), "masks": List(mask)})


class SamInstanceLabeller(Labeller):
    """``sam_instance`` from a transformers ``SamModel`` (a local folder or Hub id with its image processor)."""

    columns = ("sam_instance",)
    task = "mask-generation"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, points_per_side: int = 32,
                 query_points_per_side: int = DEFAULT_QUERY_POINTS_PER_SIDE, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95, nms_iou_thresh: float = 0.7):
        from transformers import AutoImageProcessor, SamModel

        for name, value in (("points_per_side", points_per_side), ("query_points_per_side", query_points_per_side),
                            ("points_per_batch", points_per_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"sam_instance: {name} must be an integer >= 1, got {value!r}")
        for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                            ("nms_iou_thresh", nms_iou_thresh)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"sam_instance: {name} must be in [0, 1], got {value}")
        config = check_model_task(model_id, "sam_instance", self.task, ("MODEL_FOR_MASK_GENERATION_MAPPING_NAMES",))
        if config.model_type != "sam":
            raise ValueError(f"sam_instance: model {model_id!r} is a {config.model_type!r} model; this labeller runs SamModel "
                             "checkpoints (model_type 'sam', e.g. facebook/sam-vit-huge, the model 4M-21 used)")
        model = SamModel.from_pretrained(model_id).to(device).eval()
        try:
            processor = AutoImageProcessor.from_pretrained(model_id)
        except (OSError, ValueError) as error:
            raise ValueError(f"sam_instance: model {model_id!r} has no image processor: {error}") from error
        self.generator = AutomaticMaskGenerator(model, processor, points_per_side, points_per_batch,
                                                float(pred_iou_thresh), float(stability_score_thresh), 1.0, float(nms_iou_thresh))
        self.model_id, self.batch_size, self.query_points_per_side = model_id, batch_size, query_points_per_side

    def features(self, size):
        return {"sam_instance": sam_instance_feature()}

    def label(self, images, labels):
        entries, full_masks = [], []
        for start in range(0, len(images), self.batch_size):
            for masks, _ in self.generator(images[start : start + self.batch_size]):
                entries.append(instance_entries(masks, self.query_points_per_side))
                full_masks.append(masks)
        return {"sam_instance": entries, SAM_MASKS_KEY: full_masks}

    def metadata(self):
        generator = self.generator
        return {
            "model": self.model_id, "task": self.task, "points_per_side": generator.points_per_side,
            "query_points_per_side": self.query_points_per_side, "pred_iou_thresh": generator.pred_iou_thresh,
            "stability_score_thresh": generator.stability_score_thresh, "nms_iou_thresh": generator.nms_iou_thresh,
            "mask_size": SAM_MASK_SIZE,
        }
