"""One PNG of a sample: its inputs and the modalities the any-to-any pipeline generated.

Layout: one row of labelled square tiles (inputs first, labelled ``"input <name>"``, then outputs
in the pipeline's order), boxes drawn on their tile, and the caption text (input and/or generated)
written in a band under the row::

    +--------+--------+--------+--------+
    |input rgb| depth | semseg |  det   |   <- LABEL_HEIGHT px labels
    | [tile] | [tile] | [tile] | [tile] |   <- tile_size x tile_size
    +--------+--------+--------+--------+
    semseg: [#] sky [#] floor [#] cube       <- the legend: a colour swatch and a name per class shown
    caption: a red cube left of a ...        <- only when a caption (or a 4M-21 text output) is present

The legend lists the classes present in the segmentation tiles (given and generated), in id order,
with the palette colour the tiles use; names come from ``class_names`` (``"class <id>"`` without).
Width = n * tile_size + (n + 1) * MARGIN; height = MARGIN + LABEL_HEIGHT + tile_size + MARGIN,
plus the text band (legend rows and text lines, LINE_HEIGHT each).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..text.sequence_modalities import SEQUENCE_MODALITIES
from ..processing.image_reading import normalise_pixels, open_image, pil_to_rgb, tensor_to_array
from ..processing.visualization import colorize_depth, colorize_normals, colorize_semseg, draw_boxes, semseg_palette

MARGIN = 4
LABEL_HEIGHT = 14
LINE_HEIGHT = 14
MIN_TILE_SIZE = 128
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
IMAGE_NAMES = ("rgb", "depth", "normal", "semseg")
TEXT_NAMES = SEQUENCE_MODALITIES  # 4M-21's text-serialised outputs: shown as their text, under the row
SWATCH_SIZE = 10
SEMSEG = "semseg"


def make_grid(inputs, outputs: Mapping, tile_size: int | None = None,
              class_names: Sequence[str] | None = None) -> Image.Image:
    """The grid image of one sample.

    Args:
        inputs: what was given to the pipeline for this sample: an image (PIL, path or (H, W, 3)
            array) or a dict ``{modality: value}`` (rgb image, depth (H, W) metres, normal
            (H, W, 3), semseg (H, W) ids, caption str, det box list).
        outputs: the pipeline's output dict for this sample (``"tokens"`` is ignored).
        tile_size: side of every tile in pixels (default: the largest generated image, at least 128).
        class_names: the segmentation classes' names by id, for the legend (e.g. ``SCENE_CLASSES``).
    """
    if not isinstance(outputs, Mapping):
        raise ValueError(f"outputs: expected the pipeline's output dict for one sample, got {type(outputs).__name__}")
    inputs = dict(inputs) if isinstance(inputs, Mapping) else {"rgb": inputs}
    tiles, texts = [], []
    input_image = _as_pil(inputs["rgb"], "inputs rgb") if "rgb" in inputs else None
    for name, value in inputs.items():
        if name in ("rgb", "tok_rgb"):
            tiles.append((f"input {name}", input_image))
        elif name == "caption" or name in TEXT_NAMES:
            texts.append(f"input {name}: {value}")
        else:
            tiles.append((f"input {name}", _input_tile(name, value, input_image)))
    for name, value in outputs.items():
        if name == "tokens":
            continue
        if name == "caption":
            texts.append(f"caption: {value}")
        elif isinstance(value, Mapping) and isinstance(value.get("image"), Image.Image):
            tiles.append((name, value["image"]))
        elif name in TEXT_NAMES and isinstance(value, Mapping) and "text" in value:
            texts.append(f"{name}: {value['text']}")
        elif isinstance(value, Mapping) and value.get("image", 0) is None and hasattr(value.get("array"), "shape"):
            texts.append(f"{name}: float array {tuple(value['array'].shape)}")  # feature maps, global embeddings
        else:
            raise ValueError(f"outputs[{name!r}]: expected {{'image': PIL image, ...}}, a caption string or, for "
                             f"{', '.join(TEXT_NAMES)}, {{'text', 'data', 'error'}}")
    if not tiles and not texts:
        raise ValueError("make_grid: nothing to show (no inputs and no outputs)")
    if tile_size is None:
        tile_size = max([MIN_TILE_SIZE] + [max(image.size) for _, image in tiles])
    tile_size = int(tile_size)
    if isinstance(outputs.get("det"), Mapping) and "boxes" in outputs["det"]:
        tiles = [(name, _boxes_tile(outputs, input_image, tile_size) if name == "det" else image) for name, image in tiles]
    return _compose(tiles, texts, tile_size, semseg_legend(inputs, outputs, class_names))


def semseg_legend(inputs: Mapping, outputs: Mapping, class_names: Sequence[str] | None = None) -> list[tuple[tuple, str]]:
    """``[(colour, name)]`` of every class present in the given and generated segmentations, in id order.

    ``colour`` is the class's palette colour (the tiles' colours: the palette does not depend on the class
    count); ``name`` is ``class_names[id]``, or ``"class <id>"`` where no name is given.
    """
    if class_names is not None and (isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names)):
        raise ValueError(f"class_names: expected a list of class-name strings, got {class_names!r}")
    maps = []
    if inputs.get(SEMSEG) is not None:
        maps.append(np.asarray(inputs[SEMSEG]))
    if isinstance(outputs.get(SEMSEG), Mapping) and outputs[SEMSEG].get("array") is not None:
        maps.append(np.asarray(outputs[SEMSEG]["array"]))
    present = sorted({int(v) for array in maps if np.issubdtype(array.dtype, np.integer) for v in np.unique(array) if v >= 0})
    if not present:
        return []
    palette = semseg_palette(present[-1] + 1)
    names = list(class_names or [])
    return [(tuple(int(c) for c in palette[i]), names[i] if i < len(names) else f"class {i}") for i in present]


def _boxes_tile(outputs: Mapping, input_image: Image.Image | None, tile_size: int) -> Image.Image:
    """The generated boxes drawn at tile resolution (readable labels) on the input image, else the
    generated RGB, else the pipeline's own det picture."""
    generated_rgb = outputs.get("rgb", {}).get("image") if isinstance(outputs.get("rgb"), Mapping) else None
    background = input_image or generated_rgb or outputs["det"]["image"]
    return draw_boxes(background.convert("RGB").resize((tile_size, tile_size), Image.BICUBIC), outputs["det"]["boxes"])


def save_grid(inputs, outputs: Mapping, path, tile_size: int | None = None,
              class_names: Sequence[str] | None = None) -> Path:
    """Write :func:`make_grid` as a PNG to ``path`` (atomically: a temporary name, then renamed)."""
    path = Path(path)
    grid = make_grid(inputs, outputs, tile_size, class_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    grid.save(temporary, format="PNG")
    os.replace(temporary, path)
    return path


def grid_size(num_tiles: int, tile_size: int, num_text_lines: int = 0) -> tuple[int, int]:
    """(width, height) of a grid with ``num_tiles`` tiles and ``num_text_lines`` lines of text."""
    width = max(num_tiles, 1) * tile_size + (max(num_tiles, 1) + 1) * MARGIN
    height = MARGIN + LABEL_HEIGHT + tile_size + MARGIN + (num_text_lines * LINE_HEIGHT + MARGIN if num_text_lines else 0)
    return width, height


# ---- helpers --------------------------------------------------------------------------------------------
def _compose(tiles: list[tuple[str, Image.Image]], texts: list[str], tile_size: int,
             legend: list[tuple[tuple, str]] = ()) -> Image.Image:
    font = ImageFont.load_default()
    width, _ = grid_size(len(tiles), tile_size)
    legend_rows = _legend_rows(legend, font, width - 2 * MARGIN)
    lines = [line for text in texts for line in _wrap(text, font, width - 2 * MARGIN)]
    width, height = grid_size(len(tiles), tile_size, len(legend_rows) + len(lines))
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, (label, image) in enumerate(tiles):
        left = MARGIN + index * (tile_size + MARGIN)
        draw.text((left, MARGIN), label, fill=TEXT_COLOUR, font=font)
        # Nearest keeps class maps and token blocks crisp when enlarging small images.
        canvas.paste(image.convert("RGB").resize((tile_size, tile_size), Image.Resampling.NEAREST),
                     (left, MARGIN + LABEL_HEIGHT))
    top = MARGIN + LABEL_HEIGHT + tile_size + MARGIN
    for row in legend_rows:
        for left, colour, name in row:
            if colour is not None:
                draw.rectangle((left, top + 1, left + SWATCH_SIZE - 1, top + SWATCH_SIZE), fill=colour, outline=TEXT_COLOUR)
                left += SWATCH_SIZE + 3
            draw.text((left, top), name, fill=TEXT_COLOUR, font=font)
        top += LINE_HEIGHT
    for number, line in enumerate(lines):
        draw.text((MARGIN, top + number * LINE_HEIGHT), line, fill=TEXT_COLOUR, font=font)
    return canvas


def _legend_rows(legend: list[tuple[tuple, str]], font, width: int) -> list[list[tuple[int, tuple | None, str]]]:
    """The legend laid out left to right in rows of ``width`` px: ``[[(left, colour, name)]]``, the first
    row led by the text ``semseg:`` (colour None: no swatch)."""
    if not legend:
        return []
    title = f"{SEMSEG}:"
    rows = [[(MARGIN, None, title)]]
    left = MARGIN + int(font.getlength(title)) + 6
    for colour, name in legend:
        entry_width = SWATCH_SIZE + 3 + int(font.getlength(name)) + 10
        if left + entry_width > MARGIN + width and len(rows[-1]) > 1:
            rows.append([])
            left = MARGIN
        rows[-1].append((left, colour, name))
        left += entry_width
    return rows


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a word longer than a line gets a line of its own)."""
    lines, line = [], ""
    for word in str(text).split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines or [""]


EDGE_INPUTS = ("sam_edge", "canny_edge")


def _as_pil(value, where: str) -> Image.Image:
    if isinstance(value, (str, os.PathLike)):
        return open_image(value, where)
    if isinstance(value, Image.Image):
        return pil_to_rgb(value, where)
    array = np.asarray(tensor_to_array(value, where))
    if array.ndim == 3 and array.shape[-1] == 3:
        array = normalise_pixels(array, where)
        if array.dtype != np.uint8:
            array = np.round(array.astype(np.float64) * 255.0).astype(np.uint8)
        return Image.fromarray(array)
    raise ValueError(f"{where}: expected a PIL image, a path or an (H, W, 3) array, got shape {array.shape}")


def _input_tile(name: str, value, input_image: Image.Image | None) -> Image.Image:
    """A viewable picture of one given input map (depth, normal, semseg) or box list (det)."""
    if name == "det":
        background = input_image or Image.new("RGB", (MIN_TILE_SIZE, MIN_TILE_SIZE), (128, 128, 128))
        return draw_boxes(background, list(value))
    if isinstance(value, Image.Image):
        value = np.asarray(value)
    array = np.asarray(value)
    if name == "depth":
        return Image.fromarray(colorize_depth(array.reshape(array.shape[:2]).astype(np.float32)))
    if name == "normal":
        if array.dtype == np.uint8:
            return Image.fromarray(array)
        return Image.fromarray(colorize_normals(array))
    if name == "semseg":
        return Image.fromarray(colorize_semseg(array.astype(np.int64)))
    if name in EDGE_INPUTS:  # (H, W) edge map in [0, 1], drawn white on black
        edges = np.clip(array.reshape(array.shape[:2]).astype(np.float32), 0.0, 1.0)
        return Image.fromarray(np.round(edges * 255.0).astype(np.uint8), mode="L").convert("RGB")
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3))):
        return Image.fromarray(array.reshape(array.shape[:2]) if array.ndim == 3 and array.shape[-1] == 1 else array
                               ).convert("RGB")  # another (registered) modality's map, given as a uint8 picture
    raise ValueError(f"inputs: cannot draw modality {name!r}; expected rgb, depth, normal, semseg, "
                     f"{', '.join(EDGE_INPUTS)}, caption, det or a uint8 (H, W) / (H, W, 3) picture")


__all__ = ["grid_size", "make_grid", "save_grid"]
