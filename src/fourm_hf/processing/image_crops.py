"""The one crop (and flip) that every modality of a 4M sample shares, and the boxes that follow it.

A crop box is ``(left, top, right, bottom)`` in pixels of the original H x W sample, right / bottom
exclusive. :func:`choose_crop_box` picks one for a crop mode; :func:`explicit_crop_boxes` and
:func:`explicit_flips` read crops and flips given back by the caller (e.g. an earlier call's
``crop_box`` / ``flipped``) and :func:`check_crop_box` checks one against its sample. Boxes are
normalised xyxy dicts (:func:`validate_boxes`); :func:`transform_boxes` maps them into the crop.
"""

from __future__ import annotations

import math

import numpy as np

CROP_MODES = (None, "center", "random")
RANDOM_CROP_ATTEMPTS = 10


def choose_crop_box(size, crop: str | None, crop_scale, crop_ratio, generator: np.random.Generator | None = None):
    """(left, top, right, bottom) pixel crop of an (H, W) image for a crop mode.

    ``None``: the whole image; ``"center"``: the largest centred square; ``"random"``: see
    :func:`random_crop_box` (``crop_scale`` / ``crop_ratio`` apply to it only).
    """
    height, width = size
    if crop is None:
        return (0, 0, width, height)
    if crop == "center":
        side = min(height, width)
        left, top = (width - side) // 2, (height - side) // 2
        return (left, top, left + side, top + side)
    if crop == "random":
        return random_crop_box(height, width, crop_scale, crop_ratio, generator)
    raise ValueError(f"FourMImageProcessor: crop must be one of {CROP_MODES}, got {crop!r}")


def random_crop_box(height: int, width: int, crop_scale, crop_ratio, generator: np.random.Generator):
    """Random crop with area fraction in ``crop_scale`` and aspect (w / h) in ``crop_ratio``.

    Up to 10 draws (uniform area fraction, log-uniform aspect ratio), as RandomResizedCrop; when
    none fits, the largest centred crop whose aspect ratio is inside ``crop_ratio``.
    """
    if generator is None:
        raise ValueError("FourMImageProcessor: random crops need an explicit `generator=numpy.random.default_rng(seed)`")
    area = height * width
    log_ratio = (math.log(crop_ratio[0]), math.log(crop_ratio[1]))
    for _ in range(RANDOM_CROP_ATTEMPTS):
        target_area = area * generator.uniform(*crop_scale)
        aspect = math.exp(generator.uniform(*log_ratio))
        crop_width = int(round(math.sqrt(target_area * aspect)))
        crop_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(generator.integers(0, height - crop_height + 1))
            left = int(generator.integers(0, width - crop_width + 1))
            return (left, top, left + crop_width, top + crop_height)
    image_ratio = width / height
    if image_ratio < crop_ratio[0]:
        crop_width, crop_height = width, max(1, int(round(width / crop_ratio[0])))
    elif image_ratio > crop_ratio[1]:
        crop_width, crop_height = max(1, int(round(height * crop_ratio[1]))), height
    else:
        crop_width, crop_height = width, height
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return (left, top, left + crop_width, top + crop_height)


def explicit_crop_boxes(crop_box, batch_size: int, crop) -> list[list[int]] | None:
    """Caller-given crop boxes, (4,) or (B, 4), as B integer lists; None when none were given."""
    if crop_box is None:
        return None
    if crop == "random":
        raise ValueError("FourMImageProcessor: pass either crop='random' or an explicit crop_box, not both")
    if hasattr(crop_box, "detach"):
        crop_box = crop_box.detach().cpu().numpy()
    boxes = np.asarray(crop_box)
    if boxes.shape == (4,):
        boxes = boxes[None]
    if boxes.shape != (batch_size, 4):
        raise ValueError(f"crop_box: shape {boxes.shape}, expected (4,) or ({batch_size}, 4) (left, top, right, bottom)")
    if not np.issubdtype(boxes.dtype, np.integer):
        if not np.array_equal(boxes, np.round(boxes)):
            raise ValueError(f"crop_box: expected integer pixel coordinates, got {boxes.tolist()}")
    return boxes.astype(np.int64).tolist()


def check_crop_box(crop_box, size, index: int) -> tuple[int, int, int, int]:
    """``crop_box`` of sample ``index`` as ints, checked to be a non-empty box inside its (H, W)."""
    left, top, right, bottom = (int(v) for v in crop_box)
    height, width = size
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(
            f"crop_box[{index}]: {crop_box} is not a non-empty box inside the {height}x{width} image "
            "(expected 0 <= left < right <= W and 0 <= top < bottom <= H)"
        )
    return (left, top, right, bottom)


def explicit_flips(flip, batch_size: int) -> list[bool] | None:
    """Caller-given horizontal flips, a bool or B bools, as B bools; None when none were given."""
    if flip is None:
        return None
    if hasattr(flip, "detach"):
        flip = flip.detach().cpu().numpy()
    flips = np.asarray(flip)
    if flips.ndim == 0:
        flips = np.full(batch_size, bool(flips))
    if flips.shape != (batch_size,):
        raise ValueError(f"flip: shape {flips.shape}, expected a bool or {batch_size} bools")
    return [bool(value) for value in flips]


def validate_boxes(boxes, index: int) -> list[dict]:
    """The box dicts of sample ``index``, each ``box`` checked to be normalised xyxy in [0, 1]."""
    where = f"boxes[{index}]"
    if not isinstance(boxes, (list, tuple)):
        raise ValueError(f"{where}: expected a list of box dicts, got {type(boxes).__name__}")
    validated = []
    for number, entry in enumerate(boxes):
        if not isinstance(entry, dict) or "box" not in entry:
            raise ValueError(f"{where}[{number}]: expected a dict with a 'box' key, got {entry!r}")
        box = np.asarray(entry["box"], dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError(f"{where}[{number}]: box must be 4 finite numbers [xmin, ymin, xmax, ymax], got {entry['box']!r}")
        if box.min() < 0.0 or box.max() > 1.0:
            raise ValueError(f"{where}[{number}]: box {box.tolist()} outside [0, 1]; expected normalised coordinates")
        if box[0] > box[2] or box[1] > box[3]:
            raise ValueError(f"{where}[{number}]: box {box.tolist()} has xmin > xmax or ymin > ymax")
        validated.append({**entry, "box": box.tolist()})
    return validated


def transform_boxes(boxes: list[dict], size, crop_box, flip: bool) -> tuple[list[dict], list[dict]]:
    """Map normalised xyxy boxes of an (H, W) image into the crop (and flip), clipped to [0, 1].

    Returns ``(kept, dropped)``: boxes that overlap the crop with positive area (new ``box``), and
    the input dicts of those that lie outside it.
    """
    height, width = size
    left, top, right, bottom = crop_box
    kept, dropped = [], []
    for entry in boxes:
        xmin, ymin, xmax, ymax = entry["box"]
        new = np.array(
            [
                (xmin * width - left) / (right - left),
                (ymin * height - top) / (bottom - top),
                (xmax * width - left) / (right - left),
                (ymax * height - top) / (bottom - top),
            ]
        )
        new = np.clip(new, 0.0, 1.0)
        if new[2] - new[0] <= 0 or new[3] - new[1] <= 0:
            dropped.append(entry)
            continue
        if flip:
            new = np.array([1.0 - new[2], new[1], 1.0 - new[0], new[3]])
        kept.append({**entry, "box": [float(v) for v in new]})
    return kept, dropped
