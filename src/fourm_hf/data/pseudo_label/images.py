"""Reading input images for pseudo-labelling: decode, convert to RGB, resize and centre-crop.

The conversion rules are in the package docstring (``fourm_hf.data.pseudo_label``).
"""

from __future__ import annotations

import io

import numpy as np

from ...processing.image_reading import UnreadableImageError, uint16_to_uint8

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File name endings (case-insensitive) read as images from an input folder; other files are ignored."""


def to_rgb(image):
    """Convert a PIL image to RGB explicitly (rules in the module docstring); raises UnreadableImageError."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L"):  # the same 16 -> 8 bit scaling as every image reader
        return Image.fromarray(uint16_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if image.mode in ("RGB", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise UnreadableImageError(f"unsupported image mode {image.mode!r} (expected 8-bit gray, RGB, RGBA, palette or 16-bit gray)")


def resize_and_center_crop(image, size: int):
    """Resize (bicubic) so the shorter side is ``size``, then centre-crop to ``size`` x ``size``."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_image(data: bytes | None = None, path: str | None = None):
    """Decode image bytes (or a file) fully into an RGB PIL image; raises UnreadableImageError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later
            return to_rgb(opened)
    except UnreadableImageError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        where = f"{path}: " if path is not None else ""
        raise UnreadableImageError(f"{where}{type(error).__name__}: {error}") from error
