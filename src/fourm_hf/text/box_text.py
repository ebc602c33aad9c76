"""Bounding boxes <-> text: coordinate binning, serialisation, and tolerant parsing of generated text.

Boxes are serialised as ``v0=xmin v1=ymin v2=xmax v3=ymax label v0=... label ...``, boxes sorted by
the distance of their top-left corner to the origin. Coordinates are normalised to [0, 1] and
binned with ``round(value * (B - 1))``, so 0 and 1 map to the first and last bin exactly and a
bin decodes back to ``bin / (B - 1)``: a round trip moves a coordinate by at most half a bin.
Each ``v{axis}={bin}`` word is one token of the text tokenizer (see `text_layout`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .text_layout import (
    BRACKETED_PATTERN,
    COORDINATE_PATTERN,
    DEFAULT_COORD_BINS,
    EOS_TOKEN,
    NUM_BOX_COORDS,
    UNK_TOKEN,
    coordinate_token,
    normalize_class_list,
    normalize_class_name,
    reads_as_special,
)

BOX_COORD_NAMES = ("xmin", "ymin", "xmax", "ymax")


def coordinate_to_bin(value: float, coord_bins: int) -> int:
    """Bin of a coordinate in [0, 1]: ``round(value * (coord_bins - 1))`` (half to even)."""
    return int(round(value * (coord_bins - 1)))


def bin_to_coordinate(bin_index: int, coord_bins: int) -> float:
    """Coordinate in [0, 1] of a bin: ``bin_index / (coord_bins - 1)``."""
    return bin_index / (coord_bins - 1)


def _validate_box(index: int, box: Any, class_names: set[str] | None, modality: str) -> tuple[str, list[float]]:
    if not isinstance(box, dict):
        raise TypeError(f"{modality}: box {index} must be a dict with 'label' and 'box', got {type(box).__name__}")
    for field in ("label", "box"):
        if field not in box:
            raise ValueError(f"{modality}: box {index} has no {field!r} field; expected {{'label': str, 'box': [...]}}")
    label = box["label"]
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{modality}: box {index} field 'label' must be a non-empty str, got {label!r}")
    label = normalize_class_name(label) if class_names is not None else " ".join(label.split())
    if class_names is not None and label not in class_names:
        raise ValueError(f"{modality}: box {index} field 'label' {box['label']!r} is not a known class name")
    for word in label.split(" "):
        if reads_as_special(word):
            raise ValueError(
                f"{modality}: box {index} field 'label' {label!r} contains {word!r}, which reads as a special token"
            )
    coords = box["box"]
    if isinstance(coords, (str, bytes)) or not isinstance(coords, Sequence) and not hasattr(coords, "__len__"):
        raise TypeError(f"{modality}: box {index} field 'box' must be 4 numbers [xmin, ymin, xmax, ymax]")
    coords = list(coords)
    if len(coords) != NUM_BOX_COORDS:
        raise ValueError(
            f"{modality}: box {index} field 'box' has {len(coords)} values; expected 4 [xmin, ymin, xmax, ymax]"
        )
    values = []
    for name, value in zip(BOX_COORD_NAMES, coords):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{modality}: box {index} field 'box' {name} must be a number, got {value!r}") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{modality}: box {index} field 'box' {name}={value} is outside [0, 1]; boxes are normalised xyxy"
            )
        values.append(value)
    xmin, ymin, xmax, ymax = values
    if xmin > xmax:
        raise ValueError(f"{modality}: box {index} field 'box' has xmin={xmin} > xmax={xmax}")
    if ymin > ymax:
        raise ValueError(f"{modality}: box {index} field 'box' has ymin={ymin} > ymax={ymax}")
    return label, values


def boxes_to_text(
    boxes: Sequence[dict],
    coord_bins: int = DEFAULT_COORD_BINS,
    class_names: Iterable[str] | None = None,
    modality: str = "det",
) -> str:
    """Serialise boxes as ``v0=xmin v1=ymin v2=xmax v3=ymax label ...``.

    Args:
        boxes: list of ``{"label": str, "box": [xmin, ymin, xmax, ymax]}``, coordinates in [0, 1].
        coord_bins: number of bins per coordinate (coordinates binned by `coordinate_to_bin`).
        class_names: when given, every label must be one of them (compared lower-cased).

    Boxes are sorted by the distance of their top-left corner to the origin (ties keep input
    order). Labels are written with single spaces. An empty list gives ``""``.
    Raises ValueError / TypeError naming the box index and field.
    """
    if not isinstance(coord_bins, int) or coord_bins < 2:
        raise ValueError(f"{modality}: coord_bins must be an int >= 2, got {coord_bins!r}")
    if isinstance(boxes, (str, bytes, dict)) or not isinstance(boxes, Iterable):
        raise TypeError(f"{modality}: boxes must be a list of {{'label', 'box'}} dicts, got {type(boxes).__name__}")
    known = set(normalize_class_list(class_names)) if class_names is not None else None
    validated = [_validate_box(index, box, known, modality) for index, box in enumerate(boxes)]
    validated.sort(key=lambda item: math.hypot(item[1][0], item[1][1]))
    words = []
    for label, values in validated:
        words += [coordinate_token(axis, coordinate_to_bin(value, coord_bins)) for axis, value in enumerate(values)]
        words.append(label)
    return " ".join(words)


def text_to_boxes(
    text_or_ids: str | Sequence[int],
    coord_bins: int = DEFAULT_COORD_BINS,
    class_names: Iterable[str] | None = None,
    tokenizer=None,
) -> list[dict]:
    """Parse (possibly malformed) generated box text back into ``[{"label": str, "box": [4 floats]}]``.

    Reads ``v0= v1= v2= v3= label`` groups left to right. A box is kept only when its four
    coordinates come in order, each bin is below ``coord_bins``, xmin <= xmax, ymin <= ymax, the
    label is non-empty (and, with ``class_names``, a known class). Anything else (incomplete or
    out-of-order boxes, trailing garbage) is skipped; ``[UNK]`` words are left out of labels;
    a sentinel or other bracketed special token ends the box being read; text after ``[EOS]``
    is ignored. Never raises for malformed text.

    Args:
        text_or_ids: the text, or token ids (then ``tokenizer``, a `FourMTextTokenizer`, is required).
    """
    if not isinstance(text_or_ids, str):
        if tokenizer is None:
            raise TypeError("text_to_boxes: token ids need `tokenizer=`; or pass the decoded text")
        return tokenizer.decode_boxes(text_or_ids, class_names=class_names)
    known = None
    if class_names is not None:
        known = set(normalize_class_list(class_names))
    boxes = []

    def finish_box(bins, label_words):
        if bins is None or len(bins) != NUM_BOX_COORDS or not label_words:
            return
        label = " ".join(label_words)
        xmin, ymin, xmax, ymax = (bin_to_coordinate(b, coord_bins) for b in bins)
        if xmin <= xmax and ymin <= ymax and (known is None or label in known):
            boxes.append({"label": label, "box": [xmin, ymin, xmax, ymax]})

    bins: list[int] | None = None  # bins of the box being read; None = skipping until the next v0
    label_words: list[str] = []  # only filled once the four bins are read
    for word in text_or_ids.split():
        coordinate = COORDINATE_PATTERN.match(word)
        if coordinate is not None:
            axis, bin_index = int(coordinate.group(1)), int(coordinate.group(2))
            if label_words:  # a coordinate after a label closes that box
                finish_box(bins, label_words)
                bins, label_words = None, []
            if axis == 0:
                bins, label_words = [], []
            if bins is not None and axis == len(bins) and bin_index < coord_bins:
                bins.append(bin_index)
            else:
                bins = None  # out of order or out of range
            continue
        if word == EOS_TOKEN:
            break
        if word == UNK_TOKEN:
            continue  # an unknown word: skipped; a label made only of them is empty and drops its box
        if BRACKETED_PATTERN.match(word):
            # sentinels, [PAD], [SOS], other bracketed tokens: close a finished box, drop a partial one
            finish_box(bins, label_words)
            bins, label_words = None, []
            continue
        if bins is not None and len(bins) == NUM_BOX_COORDS:
            label_words.append(word)
    finish_box(bins, label_words)
    return boxes

