"""Per-modality handling of the aligned dense maps of a 4M sample: decoding and resampling.

Decoding validates one input (PIL image, numpy array, or, for RGB, a torch tensor) and brings it to
canonical numpy form: RGB (H, W, 3) float32 in [0, 1], depth (H, W) float32 metres (0 = invalid),
normals (H, W, 3) float32 in [-1, 1], segmentation (H, W) int64 class ids. Every error names the
input (``images[2]``, ``depth[0]``, ...), what it got and what was expected.

Resampling crops a canonical map to a crop box and resizes it to S x S with what suits the
modality: RGB bicubic or bilinear (clipped to [0, 1]); depth bilinear over valid pixels only (a
normalised convolution: an output pixel is valid when more than half of its interpolation weight
falls on valid input pixels) or nearest; normals bilinear, then re-normalised to unit length;
segmentation nearest only (never new ids).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .image_reading import SIXTEEN_BIT_MODES, normalise_pixels, pil_to_rgb, tensor_to_array

RGB_RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
DEPTH_RESAMPLING = ("bilinear", "nearest")
# PIL modes turned into RGB with ``Image.convert("RGB")``; an alpha channel is dropped, not composited.
PIL_MODES_CONVERTED_TO_RGB = ("1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
# Channel counts of arrays / tensors that do_convert_rgb turns into RGB: gray (repeated) and RGBA (alpha dropped).
ARRAY_CHANNELS_CONVERTED_TO_RGB = (1, 4)
NORMAL_RANGE_TOLERANCE = 1e-3
DATA_FORMATS = ("channels_first", "channels_last")
DEFAULT_RESCALE_FACTOR = 1 / 255  # with it, pixels follow image_reading's rules (16-bit scaled, bool -> 0/255)


# ------------------------------------------------------------------------------------ decoding


def as_array(value, where: str, allow_tensor: bool = False) -> np.ndarray:
    """A numpy array as it is; a torch tensor on the CPU as numpy where ``allow_tensor``; else TypeError."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        if allow_tensor:
            return tensor_to_array(value, where)
        raise TypeError(f"{where}: got a torch tensor; pass a channels-last numpy array or a PIL image")
    raise TypeError(f"{where}: expected a PIL image, a numpy array or a torch tensor, got {type(value).__name__}")


def rgb_channels_last(array: np.ndarray, data_format: str | None, convert_rgb: bool, where: str) -> np.ndarray:
    """An image array (H, W, C) or (C, H, W) -> (H, W, 3).

    ``data_format`` says which layout; when None, channels-last if the last axis is a channel count,
    else channels-first. C is 3, or with ``convert_rgb`` also 1 (gray, repeated; also a 2-D (H, W)
    array) or 4 (RGBA: the alpha channel is dropped, as PIL's ``convert("RGB")`` does).
    """
    counts = (3, *ARRAY_CHANNELS_CONVERTED_TO_RGB) if convert_rgb else (3,)
    expected = "(H, W, C) or (C, H, W) with C in {1, 3, 4} (or (H, W) gray)" if convert_rgb else "(H, W, 3) or (3, H, W) RGB"
    if convert_rgb and array.ndim == 2:
        array = array[..., None]
        data_format = "channels_last"
    if array.ndim != 3 or (array.shape[0] not in counts and array.shape[-1] not in counts):
        hint = "" if convert_rgb else " (do_convert_rgb=False: convert grayscale or RGBA first, or set do_convert_rgb=True)"
        raise ValueError(f"{where}: shape {array.shape}, expected {expected}{hint}")
    if data_format is None:
        data_format = "channels_last" if array.shape[-1] in counts else "channels_first"
    if data_format == "channels_first":
        if array.shape[0] not in counts:
            raise ValueError(f"{where}: shape {array.shape} is not channels_first {expected}")
        array = np.moveaxis(array, 0, -1)
    elif array.shape[-1] not in counts:
        raise ValueError(f"{where}: shape {array.shape} is not channels_last {expected}")
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return array[..., :3]


def decode_rgb(image, where: str, options: dict) -> np.ndarray:
    """One RGB image -> (H, W, 3) float32 in [0, 1].

    ``options`` (``FourMImageProcessor.pixel_options``): integer pixels are multiplied by
    ``rescale_factor`` (``do_rescale`` must be on), floats must already lie in [0, 1];
    ``do_convert_rgb`` turns other PIL modes and gray / RGBA arrays into RGB;
    ``input_data_format`` fixes the layout of arrays and tensors.
    """
    if isinstance(image, Image.Image):
        if image.mode != "RGB" and options["do_convert_rgb"] and image.mode in PIL_MODES_CONVERTED_TO_RGB + SIXTEEN_BIT_MODES:
            image = pil_to_rgb(image, where)
        elif image.mode != "RGB" and not options["do_convert_rgb"]:
            raise ValueError(f"{where}: PIL mode {image.mode!r} is not RGB and do_convert_rgb=False; "
                             "convert it first or set do_convert_rgb=True")
        elif image.mode != "RGB":
            raise ValueError(f"{where}: PIL mode {image.mode!r} is not a colour image; expected RGB (or L/P/RGBA)")
        array = np.asarray(image)
    else:
        array = as_array(image, where, allow_tensor=True)
        array = rgb_channels_last(array, options["input_data_format"], options["do_convert_rgb"], where)
    factor = float(options["rescale_factor"])
    if np.issubdtype(array.dtype, np.floating) or factor == DEFAULT_RESCALE_FACTOR:
        array = normalise_pixels(array, where)  # uint16 scaled, bool -> 0/255, out-of-range refused
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if not options["do_rescale"]:
            raise ValueError(f"{where}: integer pixels with do_rescale=False; pass floats in [0, 1] or set do_rescale=True")
        scaled = array.astype(np.float64) * factor
        if scaled.size and (scaled.min() < 0.0 or scaled.max() > 1.0):
            raise ValueError(f"{where}: {array.dtype} pixels in [{array.min()}, {array.max()}] times rescale_factor "
                             f"{factor:.6g} leave [0, 1]; set rescale_factor to 1 / the largest pixel value")
        return scaled.astype(np.float32)
    return array.astype(np.float32)


def decode_depth(depth, where: str) -> np.ndarray:
    """numpy (H, W) / (H, W, 1) or PIL ``"F"`` metres -> (H, W) float32, >= 0, 0 = invalid."""
    if isinstance(depth, Image.Image):
        if depth.mode != "F":
            raise ValueError(f"{where}: PIL mode {depth.mode!r}; expected 'F' (metres) or a numpy array in metres")
        depth = np.asarray(depth)
    array = as_array(depth, where)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{where}: shape {array.shape}, expected (H, W) or (H, W, 1)")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{where}: dtype {array.dtype}, expected a real number type (metres)")
    array = array.astype(np.float32)
    if np.isnan(array).any():
        raise ValueError(f"{where}: contains NaN; mark invalid pixels with 0 instead")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: contains inf; mark invalid pixels with 0 instead")
    if array.min() < 0:
        raise ValueError(f"{where}: negative depth {array.min():.3g}; expected metres >= 0 (0 = invalid)")
    return array


def decode_normal(normal, where: str) -> np.ndarray:
    """numpy (H, W, 3) float in [-1, 1] or uint8 (v / 255 * 2 - 1), or an RGB PIL image -> (H, W, 3) float32."""
    if isinstance(normal, Image.Image):
        if normal.mode != "RGB":
            raise ValueError(f"{where}: PIL mode {normal.mode!r}; expected an RGB-encoded normal map")
        normal = np.asarray(normal)
    array = as_array(normal, where)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{where}: shape {array.shape}, expected (H, W, 3)")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0 * 2.0 - 1.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: dtype {array.dtype}, expected float in [-1, 1] or uint8")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: contains NaN or inf")
    if np.abs(array).max() > 1.0 + NORMAL_RANGE_TOLERANCE:
        raise ValueError(f"{where}: values up to {np.abs(array).max():.3g} in magnitude, expected [-1, 1]")
    return array.astype(np.float32)


def decode_semseg(semseg, where: str, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """numpy (H, W) integer ids or PIL ``"L"`` / ``"P"`` / ``"I"`` -> (H, W) int64 ids in
    ``[0, num_classes)`` (or ``ignore_index``)."""
    if isinstance(semseg, Image.Image):
        if semseg.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{where}: PIL mode {semseg.mode!r}; expected 'L', 'P', 'I' or 'I;16' class ids")
        semseg = np.asarray(semseg)
    array = as_array(semseg, where)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{where}: shape {array.shape}, expected (H, W) class ids")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: dtype {array.dtype}, expected integer class ids")
    array = array.astype(np.int64)
    allowed = (array >= 0) & (array < num_classes)
    if ignore_index is not None:
        allowed |= array == ignore_index
    if not allowed.all():
        bad = int(array[~allowed][0])
        raise ValueError(f"{where}: class id {bad} outside [0, {num_classes}) (num_semseg_classes; ignore index {ignore_index})")
    return array


# ---------------------------------------------------------------------------------- resampling


def resize_float(array: np.ndarray, crop_box, size: int, resample) -> np.ndarray:
    """Crop (H, W, C) float to ``crop_box`` and resize to (size, size, C) with PIL, channel by channel."""
    channels = []
    for channel in range(array.shape[-1]):
        image = Image.fromarray(np.ascontiguousarray(array[..., channel], dtype=np.float32))
        channels.append(np.asarray(image.resize((size, size), resample=resample, box=tuple(crop_box))))
    return np.stack(channels, axis=-1)


def resize_rgb(rgb: np.ndarray, crop_box, size: int, resample: str) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (size, size, 3), ``resample`` a key of RGB_RESAMPLING, clipped to [0, 1]."""
    resized = resize_float(rgb, crop_box, size, RGB_RESAMPLING[resample])
    return np.clip(resized, 0.0, 1.0)  # bicubic overshoots at edges


def resize_depth(depth: np.ndarray, crop_box, size: int, resample: str) -> np.ndarray:
    """(H, W) metres -> (size, size); ``"bilinear"`` averages valid (> 0) pixels only, ``"nearest"`` copies."""
    if resample == "nearest":
        return resize_float(depth[..., None], crop_box, size, Image.Resampling.NEAREST)[..., 0]
    valid = (depth > 0).astype(np.float32)
    weighted = resize_float(np.stack([depth * valid, valid], axis=-1), crop_box, size, Image.Resampling.BILINEAR)
    depth_sum, weight = weighted[..., 0], weighted[..., 1]
    return np.where(weight > 0.5, depth_sum / np.maximum(weight, 1e-6), 0.0).astype(np.float32)


def resize_normal(normal: np.ndarray, crop_box, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3) bilinear, re-normalised to unit length (0 where the length vanishes)."""
    resized = resize_float(normal, crop_box, size, Image.Resampling.BILINEAR)
    length = np.linalg.norm(resized, axis=-1, keepdims=True)
    return np.where(length > 1e-6, resized / np.maximum(length, 1e-6), 0.0).astype(np.float32)


def resize_ids(ids: np.ndarray, crop_box, size: int) -> np.ndarray:
    """Nearest-neighbour crop + resize of (H, W) integer ids (no interpolation: no new ids)."""
    if ids.max(initial=0) > np.iinfo(np.int32).max or ids.min(initial=0) < np.iinfo(np.int32).min:
        raise ValueError("semseg: class ids do not fit in int32")
    image = Image.fromarray(np.ascontiguousarray(ids, dtype=np.int32))
    resized = image.resize((size, size), resample=Image.Resampling.NEAREST, box=tuple(crop_box))
    return np.asarray(resized).astype(np.int64)
