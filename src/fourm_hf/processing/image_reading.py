"""Reading an RGB image: one set of rules for paths, PIL images, numpy arrays and torch tensors.

Every way an image enters (the pipeline, the image processor, the pseudo-labelers, the demos)
comes through here, so the same picture gives the same pixels whatever form it takes:

* 8-bit pixels (uint8) are used as they are; 16-bit pixels (uint16, PIL modes ``I;16*`` and ``I``,
  e.g. a 16-bit PNG) are scaled to 8 bits (``round(v * 255 / 65535)``), never clipped;
* bool pixels map to 0 and 255;
* other integer arrays must hold values in [0, 255]; floats must be finite and lie in [0, 1];
  anything else is a ``ValueError`` that says what range was found and what is accepted;
* a file that is missing, empty, truncated or not an image is a ``ValueError`` naming its path.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
UINT16_MAX = 65535


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded (missing, empty, truncated, not an image)."""


def open_image(path, where: str = "image") -> Image.Image:
    """Open and fully decode an image file -> a PIL image in RGB (16-bit images scaled to 8 bits).

    Raises :class:`UnreadableImageError` (a ValueError) naming ``path`` when it cannot be read."""
    shown = os.fspath(path)
    if not os.path.isfile(path):
        raise UnreadableImageError(f"{where}: no image file at {shown!r}.")
    if os.path.getsize(path) == 0:
        raise UnreadableImageError(f"{where}: the image file {shown!r} is empty (0 bytes).")
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later
            return pil_to_rgb(opened, f"{where} ({shown})")
    except UnreadableImageError:
        raise
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"{where}: cannot read the image file {shown!r} ({type(error).__name__}: "
                                   f"{error}); expected a complete PNG, JPEG, WebP, ... file.") from error


def pil_to_rgb(image: Image.Image, where: str = "image") -> Image.Image:
    """A PIL image in any common mode -> RGB; 16-bit modes are scaled to 8 bits (PIL would clip them)."""
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{where}: the image is empty ({image.width}x{image.height}).")
    if image.mode in SIXTEEN_BIT_MODES:
        array = np.asarray(image)
        if image.mode == "I" and (array.min() < 0 or array.max() > UINT16_MAX):
            raise ValueError(f"{where}: 32-bit integer image with values in [{array.min()}, {array.max()}]; "
                             f"expected 16-bit values in [0, {UINT16_MAX}].")
        gray = uint16_to_uint8(array.astype(np.uint16))
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    if image.mode == "F":
        raise ValueError(f"{where}: a 32-bit float PIL image (mode 'F') has no agreed range; pass a float "
                         "numpy array in [0, 1] instead.")
    return image if image.mode == "RGB" else image.convert("RGB")


def uint16_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit pixels -> 8 bits, 0 -> 0 and 65535 -> 255, rounded."""
    return np.round(array.astype(np.float64) * (255.0 / UINT16_MAX)).astype(np.uint8)


def normalise_pixels(array: np.ndarray, where: str = "image") -> np.ndarray:
    """Pixel values of any dtype -> uint8 (0..255) or float (0..1), by the module's rules.

    uint8 and floats in [0, 1] pass unchanged; uint16 is scaled; bool -> 0/255; other integers must
    lie in [0, 255]. Refused: nan/inf, floats outside [0, 1], integers outside [0, 255] (other than
    uint16), complex, object and string arrays."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return uint16_to_uint8(array)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{where}: {array.dtype} pixels in [{array.min()}, {array.max()}]; expected 0..255 "
                             "(8-bit), or pass 16-bit images as uint16 and they are scaled to 8 bits.")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: {array.dtype} pixels contain NaN or inf; expected floats in [0, 1].")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(f"{where}: float pixels in [{array.min():.3g}, {array.max():.3g}], expected [0, 1] "
                             "(pass uint8 for 0..255 images, uint16 for 16-bit ones).")
        return array
    raise ValueError(f"{where}: pixels of dtype {array.dtype}; expected uint8 (0..255), uint16 (16-bit), bool, "
                     "or float (0..1).")


def tensor_to_array(value, where: str = "image") -> np.ndarray:
    """A torch tensor -> numpy on the CPU (bfloat16 as float32); anything else passes through."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return value


__all__ = ["UnreadableImageError", "normalise_pixels", "open_image", "pil_to_rgb", "tensor_to_array", "uint16_to_uint8"]
