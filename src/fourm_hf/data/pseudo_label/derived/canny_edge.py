"""``canny_edge``: scikit-image's Canny edge detector on the grayscale image (no model)."""

from __future__ import annotations

import numpy as np

from ..base import Labeller

DEFAULT_CANNY_SIGMA = 1.0
"""Standard deviation (pixels of the cropped image) of the Gaussian smoothing before the gradient."""

DEFAULT_CANNY_THRESHOLDS = (0.1, 0.2)
"""Hysteresis thresholds (low, high) on the gradient magnitude of the [0, 1] grayscale image."""


def canny_edges(image, sigma: float = DEFAULT_CANNY_SIGMA, thresholds=DEFAULT_CANNY_THRESHOLDS) -> np.ndarray:
    """RGB PIL image (H, W) -> edges (H, W) uint8 in {0, 1}.

    The image is turned into luma ``0.2125 R + 0.7154 G + 0.0721 B`` in [0, 1] (``skimage.color.rgb2gray``),
    then ``skimage.feature.canny(gray, sigma, low, high)`` with absolute thresholds.
    """
    from skimage.color import rgb2gray
    from skimage.feature import canny

    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    low, high = thresholds
    return canny(rgb2gray(rgb), sigma=sigma, low_threshold=low, high_threshold=high).astype(np.uint8)


class CannyEdgeLabeller(Labeller):
    """``canny_edge`` (size, size) uint8 {0, 1}: Canny edges of the image (parameters in the module constants)."""

    columns = ("canny_edge",)

    def __init__(self, sigma: float = DEFAULT_CANNY_SIGMA, thresholds=DEFAULT_CANNY_THRESHOLDS):
        if not (isinstance(sigma, (int, float)) and sigma >= 0):
            raise ValueError(f"canny_edge: sigma must be a number >= 0, got {sigma!r}")
        low, high = (float(t) for t in thresholds)
        if not 0.0 <= low <= high:
            raise ValueError(f"canny_edge: thresholds must be (low, high) with 0 <= low <= high, got {tuple(thresholds)}")
        self.sigma, self.thresholds = float(sigma), (low, high)

    def features(self, size):
        from datasets import Array2D

        return {"canny_edge": Array2D((size, size), "uint8")}

    def label(self, images, labels):
        return {"canny_edge": [canny_edges(image, self.sigma, self.thresholds) for image in images]}

    def metadata(self):
        return {"source": "skimage.feature.canny on skimage.color.rgb2gray of the crop", "sigma": self.sigma,
                "low_threshold": self.thresholds[0], "high_threshold": self.thresholds[1]}
