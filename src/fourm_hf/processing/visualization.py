"""Rendering dense modalities and boxes for viewing (numpy + PIL only, no matplotlib).

These functions turn decoded maps into RGB pictures a person can look at; they never change the
numbers (the raw arrays are what metrics should read):

- :func:`colorize_depth`   (H, W) metres -> (H, W, 3) uint8. Log depth, normalised between the 2nd
                           and 98th percentile of the valid pixels (or given ``near`` / ``far``),
                           near = bright yellow, far = dark purple (a viridis-like ramp);
                           invalid pixels (<= 0, NaN, inf) are black.
- :func:`colorize_normals` (H, W, 3) unit vectors -> (H, W, 3) uint8 with ``(n + 1) / 2 * 255``
                           (the usual normal-map encoding: x -> red, y -> green, z -> blue).
- :func:`colorize_semseg`  (H, W) class ids -> (H, W, 3) uint8 through :func:`semseg_palette`.
- :func:`draw_boxes`       a copy of a PIL image with labelled rectangles.
- :func:`centre_square`    the largest centred square of a PIL image (what the processor's centre crop shows).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .image_crops import choose_crop_box

# Anchor colours of the depth ramp (a viridis-like sequence: dark purple -> blue -> green -> yellow),
# interpolated linearly in between. Position 0 is the far end, 1 the near end.
DEPTH_RAMP = np.array(
    [
        (68, 1, 84),
        (72, 40, 120),
        (62, 74, 137),
        (49, 104, 142),
        (38, 130, 142),
        (31, 158, 137),
        (53, 183, 121),
        (109, 205, 89),
        (180, 222, 44),
        (253, 231, 37),
    ],
    dtype=np.float64,
)

# The first palette colours are hand-picked to be distinct; more classes get golden-ratio hues.
_BASE_PALETTE = (
    (135, 206, 235),  # sky blue
    (150, 150, 150),  # grey
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
    (0, 0, 128),
)


def decoded_to_arrays(decoded, kind: str) -> np.ndarray:
    """A dense tokenizer's ``decode`` output [B, C, H, W] (a torch tensor) -> numpy, stacked over the batch:
    rgb uint8 (B, H, W, 3) from [-1, 1]; depth float32 (B, H, W); normal float32 (B, H, W, 3);
    semseg int64 (B, H, W) class ids; feature float32 (B, H, W, C)."""
    decoded = decoded.detach().cpu()
    if kind == "semseg":
        return decoded.long().numpy()
    if kind == "depth":
        return decoded[:, 0].float().numpy()
    channels_last = decoded.permute(0, 2, 3, 1).float().numpy()
    if kind == "rgb":
        return np.clip(np.round((channels_last + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return channels_last


def apply_ramp(values: np.ndarray, ramp: np.ndarray = DEPTH_RAMP) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 colours (..., 3) by linear interpolation along ``ramp``."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    position = values * (len(ramp) - 1)
    low = np.floor(position).astype(np.int64).clip(0, len(ramp) - 2)
    fraction = (position - low)[..., None]
    colours = ramp[low] * (1.0 - fraction) + ramp[low + 1] * fraction
    return np.round(colours).astype(np.uint8)


def colorize_depth(depth: np.ndarray, near: float | None = None, far: float | None = None) -> np.ndarray:
    """(H, W) depth in metres -> (H, W, 3) uint8; near bright, far dark, invalid pixels black.

    ``near`` / ``far`` (metres) fix the range (e.g. to compare several maps); by default the 2nd and
    98th percentiles of the valid pixels.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth: expected an (H, W) map in metres, got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    image = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return image
    log_depth = np.log(np.where(valid, depth, 1.0))
    low = np.log(near) if near is not None else np.percentile(log_depth[valid], 2)
    high = np.log(far) if far is not None else np.percentile(log_depth[valid], 98)
    scaled = (high - log_depth) / max(high - low, 1e-6)  # near -> 1, far -> 0
    image[valid] = apply_ramp(scaled[valid])
    return image


def colorize_normals(normal: np.ndarray) -> np.ndarray:
    """(H, W, 3) normals in [-1, 1] -> (H, W, 3) uint8 ``round((n + 1) / 2 * 255)``."""
    normal = np.asarray(normal, dtype=np.float64)
    if normal.ndim != 3 or normal.shape[-1] != 3:
        raise ValueError(f"normal: expected an (H, W, 3) map, got shape {normal.shape}")
    normal = np.nan_to_num(normal, nan=0.0)
    return np.round((np.clip(normal, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def semseg_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours: fixed distinct colours first, then golden-ratio hues."""
    if num_classes < 1:
        raise ValueError(f"semseg: num_classes must be >= 1, got {num_classes}")
    colours = list(_BASE_PALETTE[:num_classes])
    golden = 0.618033988749895
    index = 0
    while len(colours) < num_classes:
        hue = (index * golden) % 1.0
        saturation, value = (0.65, 0.95) if index % 2 == 0 else (0.85, 0.75)
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)))
        index += 1
    return np.asarray(colours, dtype=np.uint8)


def colorize_semseg(semseg: np.ndarray, num_classes: int | None = None, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8. Ids outside the palette (e.g. an ignore index) are black."""
    semseg = np.asarray(semseg)
    if semseg.ndim != 2 or not np.issubdtype(semseg.dtype, np.integer):
        raise ValueError(f"semseg: expected an (H, W) integer map of class ids, got {semseg.dtype} {semseg.shape}")
    if palette is None:
        palette = semseg_palette(num_classes if num_classes is not None else int(semseg.max(initial=0)) + 1)
    palette = np.asarray(palette, dtype=np.uint8)
    inside = (semseg >= 0) & (semseg < len(palette))
    image = np.zeros(semseg.shape + (3,), dtype=np.uint8)
    image[inside] = palette[semseg[inside]]
    return image


def _box_colour(label: str) -> tuple[int, int, int]:
    """A stable colour per label (same label, same colour across images)."""
    hue = (sum(ord(c) * 31**i for i, c in enumerate(label)) % 997) / 997
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.9, 1.0))


def draw_boxes(image: Image.Image, boxes: Sequence[dict], line_width: int | None = None) -> Image.Image:
    """A copy of ``image`` (converted to RGB) with each box drawn and labelled.

    Args:
        boxes: ``[{"label": str, "box": [xmin, ymin, xmax, ymax], "score": float | None}]``,
            coordinates normalised to [0, 1] of the image. The score, when given, follows the label.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"draw_boxes: image must be a PIL image, got {type(image).__name__}")
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line_width = line_width or max(1, round(min(width, height) / 100))
    font = ImageFont.load_default()
    for index, entry in enumerate(boxes):
        xmin, ymin, xmax, ymax = (float(v) for v in entry["box"])
        if not (0.0 <= xmin <= xmax <= 1.0 and 0.0 <= ymin <= ymax <= 1.0):
            raise ValueError(f"det: box {index} {entry['box']} is not normalised xyxy inside [0, 1]")
        label = str(entry.get("label", ""))
        colour = _box_colour(label)
        corners = (xmin * (width - 1), ymin * (height - 1), xmax * (width - 1), ymax * (height - 1))
        draw.rectangle(corners, outline=colour, width=line_width)
        score = entry.get("score")
        text = label if score is None else f"{label} {float(score):.2f}"
        if text:
            left, top, right, bottom = draw.textbbox((corners[0], corners[1]), text, font=font)
            draw.rectangle((left, top, right, bottom), fill=colour)
            draw.text((corners[0], corners[1]), text, fill=(0, 0, 0), font=font)
    return canvas


__all__ = [
    "DEPTH_RAMP",
    "apply_ramp",
    "colorize_depth",
    "colorize_normals",
    "colorize_semseg",
    "draw_boxes",
    "semseg_palette",
]


def centre_square(image: Image.Image) -> Image.Image:
    """The largest centred square of ``image``: the part the processor's centre crop shows the model."""
    return image.crop(choose_crop_box((image.height, image.width), "center", None, None))
