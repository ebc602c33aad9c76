"""The pipeline's call inputs: a user's image argument read and checked, samples grouped into batches.

Kept apart from ``any_to_any.py`` because they know nothing of 4M: any image-in pipeline reads paths,
PIL images and arrays the same way, and batches only samples that give the same inputs.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ..processing.image_reading import normalise_pixels, open_image, pil_to_rgb, tensor_to_array


def batch_indices(samples: list[dict], batch_size: int) -> list[list[int]]:
    """Indices of samples in batches of at most ``batch_size`` with the same input modalities, in order."""
    groups: dict[tuple, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(tuple(sorted(sample)), []).append(index)
    return [indices[start:start + batch_size] for indices in groups.values() for start in range(0, len(indices), batch_size)]


def load_image(value, where: str):
    """A user's image argument -> a PIL RGB image or a checked (H, W, 3) array (uint8 or float in [0, 1]).

    Paths, PIL images, numpy arrays and torch tensors follow the same rules
    (``processing/image_reading.py``): 16-bit scaled to 8 bits, bool -> 0/255, other values outside the
    accepted range refused; an unreadable file is an error naming its path."""
    if isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise ValueError(f"{where}: no image file at {os.fspath(value)!r}; expected a PIL image, a path or an "
                             "(H, W, 3) array (a text prompt goes in text=).")
        return open_image(value, where)
    if isinstance(value, Image.Image):
        return pil_to_rgb(value, where)
    value = tensor_to_array(value, where)
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[-1] != 3 or value.shape[0] < 1 or value.shape[1] < 1:
            raise ValueError(f"{where}: array of shape {value.shape}; expected (H, W, 3) RGB with H, W >= 1, uint8 "
                             "(0..255), uint16 (16-bit), bool or float (0..1); any size is centre-cropped and resized "
                             "to the model's size.")
        return normalise_pixels(value, where)
    raise ValueError(f"{where}: expected a PIL image, a path, an (H, W, 3) numpy array or tensor, got "
                     f"{type(value).__name__}.")


__all__ = ["batch_indices", "load_image"]
