"""4M-21's instance columns in a corpus: SAM instances and human poses, cropped and tokenized.

Both come from the pseudo-labelled dataset in image coordinates normalised to [0, 1] (the column
contract of ``pseudo-label``) and leave as the text serialisations of ``text/text_serialization.py``,
with the ids of a released tokenizer inside the text:

* ``sam_instance``: per query point ``{"point": [x, y], "masks": [{"box": [xmin, ymin, xmax, ymax],
  "mask": packed bytes}]}``; ``mask`` is the instance cropped to its box, resized to 64x64 and packed
  with ``np.packbits`` (512 bytes, row-major). Under a crop box (the sample's shared crop, in pixels):
  a point outside the crop is dropped; a mask whose box lies outside it is dropped; a box cut by the crop
  is clipped, and its 64x64 mask is cut to the part left and resized back to 64x64 (nearest neighbour),
  so the mask still fills its (new) box. Every mask kept is then one row of the released SAM-instance
  tokenizer's input (``[N, 1, 64, 64]``, values 0 / 1, no normalisation, fixture README section 11):
  all masks of a batch go through ONE encoder call and give 16 ids (4x4) each.
* ``human_poses``: per person ``{"box", "global_orientation" (9), "body_pose" (207), "camera" (3),
  "shape" (10)}``. Boxes follow the crop (dropped when outside); the 207 body-pose rotation entries of
  every person of the batch go through ONE call of the released pose tokenizer (8 ids each); the other
  values are binned as the reference does, scaled to the text tokenizer's ``coord_bins`` (1000 in the
  reference): global orientation over [-1, 1], SMPL betas over [-3, 3], camera clipped to [-1, 19]
  (bins clipped to the range). Sections are written in the fixed order global, pose, camera, shape
  (the reference shuffles them per sample; a training transform may). A sample with nobody left is the
  reference's text ``none``.

Coordinates (points, boxes) are binned ``round(v * (coord_bins - 1))`` over the crop, the convention
``processing/sequence_tokens.py`` decodes SAM masks with.
"""

from __future__ import annotations

import numpy as np
import torch

from ..processing.image_crops import transform_boxes

SAM_MASK_SIDE = 64
SAM_MASK_BYTES = SAM_MASK_SIDE * SAM_MASK_SIDE // 8
POSE_FIELDS = {"global_orientation": 9, "body_pose": 207, "camera": 3, "shape": 10}
# reference value ranges of the binned pose sections (low, high); camera values are clipped to theirs
POSE_RANGES = {"global_orientation": (-1.0, 1.0), "shape": (-3.0, 3.0), "camera": (-1.0, 19.0)}


# ------------------------------------------------------------------------------------------ geometry


def unpack_mask(data, where: str) -> np.ndarray:
    """512 packed bytes -> (64, 64) uint8 {0, 1} (row-major ``np.packbits`` of the mask)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != SAM_MASK_BYTES:
        size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else type(data).__name__
        raise ValueError(f"{where}: 'mask' must be {SAM_MASK_BYTES} packed bytes (np.packbits of a "
                         f"{SAM_MASK_SIDE}x{SAM_MASK_SIDE} mask), got {size}")
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
    return bits.reshape(SAM_MASK_SIDE, SAM_MASK_SIDE)


def _numbers(value, count: int, where: str, unit_range: bool) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64) if isinstance(value, (list, tuple, np.ndarray)) else None
    if array is None or array.shape != (count,) or not np.isfinite(array).all():
        raise ValueError(f"{where}: expected {count} finite numbers, got {value!r}")
    if unit_range and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{where}: {array.tolist()} outside [0, 1]; expected coordinates normalised by the image size")
    return array


def crop_point(point, size, crop_box, where: str):
    """A normalised (x, y) of an (H, W) image -> normalised (x, y) in the crop, or None when outside it."""
    x, y = _numbers(point, 2, where, unit_range=True)
    height, width = size
    left, top, right, bottom = crop_box
    px, py = x * width, y * height
    if not (left <= px <= right and top <= py <= bottom):
        return None
    return ((px - left) / (right - left), (py - top) / (bottom - top))


def crop_box_and_mask(box, mask: np.ndarray, size, crop_box, where: str):
    """A normalised box and its 64x64 mask -> (box in the crop, 64x64 mask of the part kept), or None."""
    box = _numbers(box, 4, where, unit_range=True)
    if box[0] > box[2] or box[1] > box[3]:
        raise ValueError(f"{where}: box {box.tolist()} has xmin > xmax or ymin > ymax")
    kept, _ = transform_boxes([{"box": box.tolist()}], size, crop_box, flip=False)
    if not kept:
        return None
    height, width = size
    left, top, right, bottom = crop_box
    x0, y0, x1, y1 = box * np.array([width, height, width, height])
    cols = _kept_span(x0, x1, left, right)
    rows = _kept_span(y0, y1, top, bottom)
    return kept[0]["box"], mask[np.ix_(rows, cols)]


def _kept_span(start: float, stop: float, low: float, high: float) -> np.ndarray:
    """Indices (64 of them) of the mask cells, along one axis, that resample the part of [start, stop]
    inside [low, high] back to 64 cells (nearest neighbour; identity when nothing is cut)."""
    if stop <= start:
        return np.arange(SAM_MASK_SIDE)
    first = (max(start, low) - start) / (stop - start) * SAM_MASK_SIDE
    last = (min(stop, high) - start) / (stop - start) * SAM_MASK_SIDE
    centres = first + (np.arange(SAM_MASK_SIDE) + 0.5) * (last - first) / SAM_MASK_SIDE
    return np.clip(np.floor(centres).astype(np.int64), 0, SAM_MASK_SIDE - 1)


def to_bin(value: float, coord_bins: int) -> int:
    """A coordinate in [0, 1] -> its bin ``round(v * (coord_bins - 1))``."""
    return int(round(float(value) * (coord_bins - 1)))


def _range_bins(values, low: float, high: float, coord_bins: int) -> list[int]:
    scaled = (np.clip(np.asarray(values, dtype=np.float64), low, high) - low) / (high - low)
    return [int(v) for v in np.clip(np.round(scaled * (coord_bins - 1)), 0, coord_bins - 1)]


# ------------------------------------------------------------------------------------- SAM instances


def _encode_ids(tokenizer, batch: np.ndarray) -> np.ndarray:
    """One encoder call of a released tokenizer (a ReleasedModalityTokenizer or a lazy one) -> (N, ids)."""
    device = next(tokenizer.parameters()).device
    with torch.inference_mode():
        ids = tokenizer.encode(torch.from_numpy(batch).to(device))
    return ids.reshape(ids.shape[0], -1).cpu().numpy()


def crop_sam_instances(value, size, crop_box, where: str) -> list[tuple]:
    """One row's ``sam_instance`` -> ``[(point in the crop, [(box in the crop, 64x64 mask)])]``."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list of {{'point', 'masks'}} entries, got {type(value).__name__}")
    points = []
    for number, entry in enumerate(value):
        here = f"{where}[{number}]"
        if not isinstance(entry, dict) or "point" not in entry or not isinstance(entry.get("masks", []), (list, tuple)):
            raise ValueError(f"{here}: expected a dict {{'point': [x, y], 'masks': [{{'box', 'mask'}}]}}, got {entry!r:.200}")
        point = crop_point(entry["point"], size, crop_box, f"{here}.point")
        masks = []
        for index, mask in enumerate(entry.get("masks", [])):
            at = f"{here}.masks[{index}]"
            if not isinstance(mask, dict) or "box" not in mask or "mask" not in mask:
                raise ValueError(f"{at}: expected a dict {{'box': [xmin, ymin, xmax, ymax], 'mask': bytes}}")
            cropped = crop_box_and_mask(mask["box"], unpack_mask(mask["mask"], f"{at}.mask"), size, crop_box, f"{at}.box")
            if cropped is not None:
                masks.append(cropped)
        if point is not None:
            points.append((point, masks))
    return points


def sam_instance_points(cropped_rows: list[list[tuple]], tokenizer, coord_bins: int) -> list[list[dict]]:
    """Cropped rows (``crop_sam_instances``) -> per row the processor's ``sam_instance`` entries
    ``{"point": (x, y), "masks": [{"box", "token_ids"}]}`` in bins; all masks in ONE tokenizer call."""
    masks = [mask for row in cropped_rows for _, row_masks in row for _, mask in row_masks]
    ids = iter(_encode_ids(tokenizer, np.stack(masks)[:, None].astype(np.float32)) if masks else [])
    rows = []
    for row in cropped_rows:
        entries = []
        for point, row_masks in row:
            entries.append({"point": tuple(to_bin(v, coord_bins) for v in point),
                            "masks": [{"box": tuple(to_bin(v, coord_bins) for v in box),
                                       "token_ids": [int(i) for i in next(ids)]} for box, _ in row_masks]})
        rows.append(entries)
    return rows


# --------------------------------------------------------------------------------------- human poses


def crop_human_poses(value, size, crop_box, where: str) -> list[dict]:
    """One row's ``human_poses`` -> the people whose box overlaps the crop, box mapped into it."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list of people (dicts of SMPL parameters), got {type(value).__name__}")
    people = []
    for number, person in enumerate(value):
        here = f"{where}[{number}]"
        if not isinstance(person, dict):
            raise ValueError(f"{here}: expected a dict with box and {list(POSE_FIELDS)}, got {type(person).__name__}")
        box = _numbers(person.get("box"), 4, f"{here}.box", unit_range=True)
        fields = {name: _numbers(person.get(name), count, f"{here}.{name}", unit_range=False)
                  for name, count in POSE_FIELDS.items()}
        kept, _ = transform_boxes([{"box": box.tolist()}], size, crop_box, flip=False)
        if kept:
            people.append({"box": kept[0]["box"], **fields})
    return people


def human_pose_entries(cropped_rows: list[list[dict]], tokenizer, coord_bins: int) -> list[list[dict]]:
    """Cropped rows (``crop_human_poses``) -> per row the processor's ``human_poses`` dicts (``HumanPose``
    fields, in bins); the body poses of every person in ONE call of the pose tokenizer."""
    poses = [person["body_pose"] for row in cropped_rows for person in row]
    ids = iter(_encode_ids(tokenizer, np.stack(poses).astype(np.float32)) if poses else [])
    rows = []
    for row in cropped_rows:
        rows.append([{
            "box": tuple(to_bin(v, coord_bins) for v in person["box"]),
            "global_orientation": _range_bins(person["global_orientation"], *POSE_RANGES["global_orientation"], coord_bins),
            "pose_ids": [int(i) for i in next(ids)],
            "camera": _range_bins(person["camera"], *POSE_RANGES["camera"], coord_bins),
            "shape": _range_bins(person["shape"], *POSE_RANGES["shape"], coord_bins),
        } for person in row])
    return rows


__all__ = ["SAM_MASK_BYTES", "crop_box_and_mask", "crop_human_poses", "crop_point", "crop_sam_instances",
           "human_pose_entries", "sam_instance_points", "to_bin", "unpack_mask"]
