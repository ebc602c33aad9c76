"""4M-21's token-carrying sequences decoded through their released tokenizers: SAM masks and pose rotations.

Two of 4M-21's text-serialised modalities carry ids of a tokenizer of their own inside the text
(``text/text_serialization.py``):

* ``human_poses``: each person's ``pose`` section is the 8 ids of the released pose tokenizer
  (``EPFL-VILAB/4M_tokenizers_human-poses_1k_8``, a bottleneck-MLP VQ-VAE); decoded, they are the 23 SMPL
  body-pose rotation matrices (23, 3, 3);
* ``sam_instance``: each mask is a box and the 16 ids (a 4x4 grid) of the released SAM-instance tokenizer
  (``EPFL-VILAB/4M_tokenizers_sam-instance_1k_64``, a ViT VQ-VAE on 64x64 one-channel masks); decoded, they are
  a 64x64 map of the mask inside its box.

:func:`add_sequence_decodings` adds to ``FourMProcessor.decode``'s output, per sample that parsed:
``"rotations"``: float32 (P, 23, 3, 3), one per person; ``"masks"``: one list per query point of bool
(S, S) masks on the processor's image (the 64x64 map resized to the box, nearest neighbour, and pasted there;
coordinates are the serialisation's bins 0..coord_bins-1 over the image side). A sample whose text did not
parse keeps ``data`` None and gets nothing. The mask threshold is ``decoded > 0``: the released tokenizer's
output is read as a map in [-1, 1] (or logits), as the other one-channel tokenizers are; the reference's
exact mask normalisation is not in the fixtures (assumed).

:class:`SequenceTokenizers` holds the two tokenizers on the processor (``processor.sequence_tokenizers``).
"""

from __future__ import annotations

import numpy as np
import torch

POSE_IDS, SAM_GRID, SAM_MASK_SIZE = 8, 4, 64
SEQUENCE_TOKENIZER_MODALITIES = ("human_poses", "sam_instance")


class SequenceTokenizers(dict):
    """``{"human_poses": tokenizer, "sam_instance": tokenizer}``; shared, never copied (a processor's
    ``to_dict`` deep-copies its attributes)."""

    def __deepcopy__(self, memo):
        return self


def _decode_ids(modality: str, tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """ids through the tokenizer's ``decode`` (a ``ReleasedModalityTokenizer``, loaded here if it is lazy)."""
    device = next(tokenizer.parameters()).device
    _check_ids(modality, ids, tokenizer)
    with torch.inference_mode():
        return tokenizer.decode(ids.to(device)).float().cpu()


def decode_pose_rotations(humans, tokenizer) -> np.ndarray:
    """People (``HumanPose`` list) -> float32 (P, 23, 3, 3) rotation matrices from their pose ids."""
    if not humans:
        return np.zeros((0, 23, 3, 3), dtype=np.float32)
    ids = torch.tensor([list(human.pose_ids) for human in humans], dtype=torch.long)
    if ids.shape[1] != POSE_IDS:
        raise ValueError(f"human_poses: a pose has {POSE_IDS} token ids, got {ids.shape[1]}.")
    decoded = _decode_ids("human_poses", tokenizer, ids.reshape(len(humans), POSE_IDS, 1, 1))
    return decoded.reshape(len(humans), 23, 3, 3).numpy()


def decode_sam_masks(points, tokenizer, image_size: int, coord_bins: int) -> list[list[np.ndarray]]:
    """Query points (``SamPoint`` list) -> per point, its masks as bool (image_size, image_size) arrays."""
    masks = [mask for point in points for mask in point.masks]
    if not masks:
        return [[] for _ in points]
    ids = torch.tensor([list(mask.token_ids) for mask in masks], dtype=torch.long)
    maps = _decode_ids("sam_instance", tokenizer, ids.reshape(len(masks), SAM_GRID, SAM_GRID))
    maps = maps.reshape(len(masks), -1, maps.shape[-2], maps.shape[-1])[:, 0] > 0
    pasted = iter(_paste(box_map.numpy(), mask.box, image_size, coord_bins) for box_map, mask in zip(maps, masks))
    return [[next(pasted) for _ in point.masks] for point in points]


def _check_ids(modality: str, ids: torch.Tensor, tokenizer) -> None:
    vocab = tokenizer.config.vocab_size
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"{modality}: token ids must lie in [0, {vocab}) (the tokenizer's codebook), got "
                         f"[{int(ids.min())}, {int(ids.max())}].")


def _paste(box_map: np.ndarray, box, image_size: int, coord_bins: int) -> np.ndarray:
    """A (h, w) bool map -> a bool (S, S) canvas with the map resized into ``box`` (bins 0..coord_bins-1)."""
    scale = image_size / max(coord_bins - 1, 1)
    x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
    x0, x1 = sorted((min(max(x0, 0), image_size), min(max(x1, 0), image_size)))
    y0, y1 = sorted((min(max(y0, 0), image_size), min(max(y1, 0), image_size)))
    canvas = np.zeros((image_size, image_size), dtype=bool)
    if x1 > x0 and y1 > y0:
        rows = np.arange(y1 - y0) * box_map.shape[0] // (y1 - y0)
        cols = np.arange(x1 - x0) * box_map.shape[1] // (x1 - x0)
        canvas[y0:y1, x0:x1] = box_map[rows][:, cols]
    return canvas


def add_sequence_decodings(decoded: dict, tokenizers, image_size: int, coord_bins: int) -> dict:
    """Add ``rotations`` / ``masks`` to the parsed ``human_poses`` / ``sam_instance`` samples of ``decoded``."""
    tokenizers = tokenizers or {}
    for sample in decoded.get("human_poses", []) if "human_poses" in tokenizers else []:
        if sample.get("data") is not None:
            sample["rotations"] = decode_pose_rotations(sample["data"], tokenizers["human_poses"])
    for sample in decoded.get("sam_instance", []) if "sam_instance" in tokenizers else []:
        if sample.get("data") is not None:
            sample["masks"] = decode_sam_masks(sample["data"], tokenizers["sam_instance"], image_size, coord_bins)
    return decoded


__all__ = ["SequenceTokenizers", "add_sequence_decodings", "decode_pose_rotations", "decode_sam_masks"]
