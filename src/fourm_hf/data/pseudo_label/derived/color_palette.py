"""``color_palette``: the dominant colours of the image by k-means in RGB (no model).

4M-21 serialises a palette as ``v1=<number of colours>`` then ``v0=r v0=g v0=b`` per colour, with the channels
as 0..255 integers and 1 to 7 colours (the reference stores palettes of every size 1..7 per image and draws the
size uniformly at each use). We store one palette per image: ``num_colors`` fixed, or ``"random"``: a size drawn
uniformly in 1..7 per image from a hash of its pixels and ``seed`` (so it is the same on every run and resume).

Extraction (our choice; the reference does not publish its extractor): k-means (Lloyd) on the image's RGB
pixels in float64, initialised by k-means++ with a ``numpy`` generator seeded from the pixels' hash, 20
iterations at most, on a seeded subset of 4096 pixels when the image has more. Each centre is then replaced by
the sampled pixel nearest to it, so every palette colour is a colour of the image, and the colours are sorted by
cluster size, largest first. An image with fewer distinct colours than asked gets one entry per distinct colour.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..base import Labeller

MAX_PALETTE_COLORS = 7
"""Most colours of a 4M-21 palette (the serialisation's 23 tokens: 1 + 7 * 3 + [EOS])."""

_MAX_PIXELS = 4096  # k-means runs on at most this many pixels (a seeded subset): 224 x 224 has 50176
_ITERATIONS = 20


def _pixel_seed(pixels: np.ndarray, seed: int) -> int:
    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + str(seed).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, 3), (K, 3) -> (N, K) squared Euclidean distances (as a matrix product: fast for large N)."""
    return np.maximum((points**2).sum(1)[:, None] - 2.0 * points @ centres.T + (centres**2).sum(1)[None], 0.0)


def _kmeans_plus_plus(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` initial centres (count, 3) drawn from ``points`` (N, 3) by k-means++."""
    centres = points[rng.integers(len(points))][None]
    for _ in range(1, count):
        distance = _squared_distances(points, centres).min(axis=1)
        total = distance.sum()
        index = rng.integers(len(points)) if total == 0 else rng.choice(len(points), p=distance / total)
        centres = np.concatenate([centres, points[index][None]])
    return centres


def extract_palette(image, num_colors: int, seed: int = 0) -> list[list[int]]:
    """RGB PIL image -> up to ``num_colors`` colours ``[[r, g, b], ...]`` (0..255 ints), each a pixel of the image,
    largest cluster first (fewer when the image has fewer distinct colours)."""
    if not (isinstance(num_colors, int) and 1 <= num_colors <= MAX_PALETTE_COLORS):
        raise ValueError(f"color_palette: num_colors must be an integer in 1..{MAX_PALETTE_COLORS}, got {num_colors!r}")
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(-1, 3)
    rng = np.random.default_rng(_pixel_seed(pixels, seed))
    if len(pixels) > _MAX_PIXELS:
        pixels = pixels[np.sort(rng.choice(len(pixels), _MAX_PIXELS, replace=False))]
    codes = (pixels[:, 0].astype(np.int64) << 16) | (pixels[:, 1].astype(np.int64) << 8) | pixels[:, 2]
    distinct = pixels[np.unique(codes, return_index=True)[1]].astype(np.float64)  # the sample's distinct colours
    count = min(num_colors, len(distinct))
    points = pixels.astype(np.float64)
    centres = _kmeans_plus_plus(points, count, rng)
    for _ in range(_ITERATIONS):
        assignment = _squared_distances(points, centres).argmin(axis=1)
        members = np.bincount(assignment, minlength=count)[:, None]
        sums = np.stack([np.bincount(assignment, weights=points[:, c], minlength=count) for c in range(3)], axis=1)
        updated = np.where(members > 0, sums / np.maximum(members, 1), centres)  # an empty cluster keeps its centre
        if np.allclose(updated, centres, atol=1e-3):
            break
        centres = updated
    sizes = np.bincount(_squared_distances(points, centres).argmin(axis=1), minlength=count)
    nearest = distinct[_squared_distances(distinct, centres).argmin(axis=0)].astype(np.int64)
    order = sorted(range(count), key=lambda k: (-sizes[k], tuple(nearest[k])))
    palette = []
    for k in order:  # two centres can snap to the same pixel colour: keep it once
        color = [int(c) for c in nearest[k]]
        if color not in palette:
            palette.append(color)
    return palette


def palette_size(image, seed: int = 0) -> int:
    """The per-image palette size of ``num_colors="random"``: uniform in 1..7, a function of the pixels and seed."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return 1 + _pixel_seed(pixels, seed + 1) % MAX_PALETTE_COLORS


class ColorPaletteLabeller(Labeller):
    """``color_palette``: ``[[r, g, b], ...]`` 0..255, 1..7 colours of the image (module docstring)."""

    columns = ("color_palette",)

    def __init__(self, num_colors: int | str = "random", seed: int = 0):
        if num_colors != "random" and not (isinstance(num_colors, int) and 1 <= num_colors <= MAX_PALETTE_COLORS):
            raise ValueError(f"color_palette: num_colors must be 'random' or an integer in 1..{MAX_PALETTE_COLORS}, got {num_colors!r}")
        self.num_colors, self.seed = num_colors, int(seed)

    def features(self, size):
        from datasets import List, Value

        return {"color_palette": List(List(Value("int32"), length=3))}

    def label(self, images, labels):
        palettes = []
        for image in images:
            count = palette_size(image, self.seed) if self.num_colors == "random" else self.num_colors
            palettes.append(extract_palette(image, count, self.seed))
        return {"color_palette": palettes}

    def metadata(self):
        return {"source": "k-means (k-means++ init) in RGB, centres snapped to the nearest image pixel, largest cluster first",
                "num_colors": self.num_colors, "seed": self.seed, "channel_range": [0, 255]}
