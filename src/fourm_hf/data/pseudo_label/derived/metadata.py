"""``metadata``: 4M-21's image metadata, computed from the image and from other labellers' columns (no model).

The column is a JSON string ``{key: binned int}`` with the keys of ``text.text_serialization.METADATA_KEYS`` in
that order, binned as the reference's metadata serialisation bins them, i.e. as the processor's ``metadata=``
argument takes them (``processor(metadata=json.loads(row["metadata"]), metadata_keys=METADATA_KEYS)``):

* ``original_width`` / ``original_height``: ``pixels // 32``, at most 999;
* counts (``caption_n_*``, ``n_*``, ``coco_instance_diversity``, ``semantic_diversity``): the count, at most 999;
* the other measures: clipped to ``[vmin, vmax]`` of ``MEASURE_RANGES`` and mapped to
  ``int((x - vmin) / (vmax - vmin) * 49)``, i.e. 50 bins 0..49.

A key whose source column is absent is left out. ``watermark_score`` and ``aesthetic_score`` need the LAION
watermark and aesthetic predictors, which transformers does not ship: they are never computed. The definition of
every field is in docs/pseudo-labeling-4m21.md.
"""

from __future__ import annotations

import json
import re

import numpy as np

from ....text.text_serialization import METADATA_KEYS
from ..base import ORIGINAL_SIZE, Labeller

IMAGE_SIZE_BIN = 32
MAX_BIN = 999
MEASURE_BINS = 50
MEASURE_RANGES = {  # key -> (vmin, vmax) of the reference's 50-bin measures
    "colorfulness": (0.0, 150.0), "brightness": (0.0, 255.0), "contrast": (0.0, 127.0), "saturation": (0.0, 255.0),
    "entropy": (0.0, 10.0), "walkability": (0.0, 1.0), "objectness": (0.0, 1.0), "geometric_complexity": (0.0, 0.75),
    "occlusion_score": (0.0, 0.25),
}
NOT_COMPUTED = ("watermark_score", "aesthetic_score")

OCCLUSION_DEPTH_RATIO = 1.25
"""Neighbouring pixels whose depths differ by more than this factor are an occlusion edge (our definition)."""

WALKABLE_WORDS = frozenset({
    "floor", "road", "pavement", "sidewalk", "path", "grass", "sand", "dirt", "gravel", "earth", "ground", "rug",
    "carpet", "playingfield", "field", "platform", "snow", "stairs", "stairway", "staircase", "step", "runway",
})
"""A segmentation class is walkable when a word of its name (split at non-letters, lower case) is one of these."""

COCO_THING_CLASSES = frozenset({
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
})
"""COCO's 80 "thing" classes: the objects that ``objectness`` counts (the others of COCO panoptic are "stuff")."""


# ---- raw measures ------------------------------------------------------------------------------------------
def image_measures(image) -> dict[str, float]:
    """colorfulness, brightness, contrast, saturation, entropy of an RGB PIL image (raw values, not binned)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = red - green, 0.5 * (red + green) - blue
    colorfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())  # Hasler & Suesstrunk 2003
    luma = 0.299 * red + 0.587 * green + 0.114 * blue  # ITU-R BT.601, 0..255
    high, low = rgb.max(-1), rgb.min(-1)
    saturation = np.where(high > 0, (high - low) / np.where(high > 0, high, 1.0), 0.0) * 255.0  # HSV S, 0..255
    histogram = np.bincount(np.clip(np.round(luma), 0, 255).astype(np.int64).ravel(), minlength=256)
    probability = histogram[histogram > 0] / histogram.sum()
    return {
        "colorfulness": float(colorfulness), "brightness": float(luma.mean()), "contrast": float(luma.std()),
        "saturation": float(saturation.mean()), "entropy": float(-(probability * np.log2(probability)).sum()),
    }


def caption_counts(caption: str) -> dict[str, int]:
    """Characters, whitespace-separated words, and sentences (non-empty pieces between ``.``, ``!``, ``?``)."""
    sentences = [piece for piece in re.split(r"[.!?]+", caption) if piece.strip()]
    return {"caption_n_chars": len(caption), "caption_n_words": len(caption.split()), "caption_n_sentences": len(sentences)}


def _is_walkable(name: str) -> bool:
    return any(word in WALKABLE_WORDS for word in re.split(r"[^a-z]+", name.lower()) if word)


def _thing_name(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ")


def semseg_measures(semseg: np.ndarray, classes: list[str] | None) -> dict[str, float | int]:
    """semantic_diversity (distinct classes, 255 = unlabelled not counted); with class names also walkability and
    objectness (fractions of the labelled pixels whose class is walkable / a COCO thing)."""
    semseg = np.asarray(semseg)
    present, counts = np.unique(semseg[semseg != 255], return_counts=True)
    measures = {"semantic_diversity": int(len(present))}
    if classes is not None and counts.sum() > 0:
        names = [classes[k] if k < len(classes) else "" for k in present.tolist()]
        total = counts.sum()
        measures["walkability"] = float(sum(c for n, c in zip(names, counts) if _is_walkable(n)) / total)
        measures["objectness"] = float(sum(c for n, c in zip(names, counts) if _thing_name(n) in COCO_THING_CLASSES) / total)
    return measures


def geometric_complexity(normal: np.ndarray) -> float:
    """Circular variance of the unit normals (H, W, 3): ``1 - |mean normal|``, 0 for a plane, up to 1."""
    normal = np.asarray(normal, dtype=np.float64).reshape(-1, 3)
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    unit = normal / np.where(length > 0, length, 1.0)
    return float(1.0 - np.linalg.norm(unit.mean(0)))


def occlusion_score(depth: np.ndarray, ratio: float = OCCLUSION_DEPTH_RATIO) -> float:
    """Fraction of pixels next to (4-neighbourhood) a depth jump by more than ``ratio`` (H, W depth, any scale)."""
    log_depth = np.log(np.maximum(np.asarray(depth, dtype=np.float64), 1e-6))
    edge = np.zeros(log_depth.shape, dtype=bool)
    jump = np.log(ratio)
    rows, cols = np.abs(np.diff(log_depth, axis=0)) > jump, np.abs(np.diff(log_depth, axis=1)) > jump
    edge[:-1] |= rows
    edge[1:] |= rows
    edge[:, :-1] |= cols
    edge[:, 1:] |= cols
    return float(edge.mean())


def instance_counts(boxes=None, sam_instance=None, human_poses=None) -> dict[str, int]:
    """n_coco_instances / coco_instance_diversity (from ``boxes``), n_sam_instances (distinct masks of
    ``sam_instance``), n_humans (``human_poses`` entries, else ``boxes`` labelled person)."""
    counts = {}
    if boxes is not None:
        counts["n_coco_instances"] = len(boxes)
        counts["coco_instance_diversity"] = len({box["label"] for box in boxes})
        counts["n_humans"] = sum(1 for box in boxes if str(box["label"]).lower() == "person")
    if human_poses is not None:
        counts["n_humans"] = len(human_poses)
    if sam_instance is not None:
        masks = {(tuple(m["box"]), bytes(m["mask"])) for point in sam_instance for m in point["masks"]}
        counts["n_sam_instances"] = len(masks)
    return counts


# ---- binning ---------------------------------------------------------------------------------------------------
def bin_metadata(raw: dict) -> dict[str, int]:
    """Raw values -> ``{key: bin}`` in ``METADATA_KEYS`` order, as the reference's serialisation bins them."""
    unknown = sorted(set(raw) - set(METADATA_KEYS))
    if unknown:
        raise ValueError(f"metadata: unknown keys {unknown}; expected keys of {list(METADATA_KEYS)}")
    binned = {}
    for key in METADATA_KEYS:
        if key not in raw:
            continue
        value = raw[key]
        if key in ("original_width", "original_height"):
            binned[key] = min(int(value) // IMAGE_SIZE_BIN, MAX_BIN)
        elif key in MEASURE_RANGES:
            low, high = MEASURE_RANGES[key]
            binned[key] = int((min(max(float(value), low), high) - low) / (high - low) * (MEASURE_BINS - 1))
        elif key in NOT_COMPUTED:
            raise ValueError(f"metadata: {key} needs a model this package does not run; it is never computed")
        else:
            binned[key] = min(max(int(value), 0), MAX_BIN)
    return binned


class MetadataLabeller(Labeller):
    """``metadata``: JSON ``{key: bin}`` of every reference key that the image and the earlier columns allow.

    ``semseg_classes``: class names of the ``semseg`` ids (walkability and objectness need them; the
    segmentation labeller's classes when it runs in the same call).
    """

    columns = ("metadata",)

    def __init__(self, semseg_classes: list[str] | None = None):
        self.semseg_classes = None if semseg_classes is None else [str(name) for name in semseg_classes]

    def features(self, size):
        from datasets import Value

        return {"metadata": Value("string")}

    def raw_values(self, image, row: dict) -> dict:
        """Unbinned values of one image; ``row`` holds its entries of ``labels``."""
        width, height = row.get(ORIGINAL_SIZE, image.size)
        raw = {"original_width": width, "original_height": height}
        if isinstance(row.get("caption"), str):
            raw.update(caption_counts(row["caption"]))
        raw.update(instance_counts(row.get("boxes"), row.get("sam_instance"), row.get("human_poses")))
        raw.update(image_measures(image))
        if row.get("semseg") is not None:
            raw.update(semseg_measures(row["semseg"], self.semseg_classes))
        if row.get("normal") is not None:
            raw["geometric_complexity"] = geometric_complexity(row["normal"])
        if row.get("depth") is not None:
            raw["occlusion_score"] = occlusion_score(row["depth"])
        return raw

    def label(self, images, labels):
        texts = []
        for index, image in enumerate(images):
            row = {name: values[index] for name, values in labels.items()}
            texts.append(json.dumps(bin_metadata(self.raw_values(image, row))))
        return {"metadata": texts}

    def metadata(self):
        return {"keys": list(METADATA_KEYS), "not_computed": list(NOT_COMPUTED), "semseg_classes": self.semseg_classes,
                "occlusion_depth_ratio": OCCLUSION_DEPTH_RATIO}
