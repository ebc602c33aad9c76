"""The bundled real photographs (scikit-image data) load offline as RGB PIL images with captions."""

import numpy as np
import pytest

pytest.importorskip("skimage", reason="scikit-image is not installed (pip install -e .[demo])")

from PIL import Image

from fourm_hf.data.photos import PHOTO_CAPTIONS, _to_rgb, disparity_to_depth, load_photos


def test_photos_are_rgb_with_captions():
    photos = load_photos()
    assert [p["name"] for p in photos] == list(PHOTO_CAPTIONS)
    for photo in photos:
        assert isinstance(photo["image"], Image.Image) and photo["image"].mode == "RGB", photo["name"]
        assert min(photo["image"].size) >= 100, photo["name"]
        assert photo["caption"].startswith("a ") and photo["caption"].endswith("."), photo["name"]
    grayscale = next(p for p in photos if p["name"] == "camera")
    pixels = np.asarray(grayscale["image"])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey replicated into R, G, B


def test_motorcycle_depth_is_metric_and_aligned():
    motorcycle = next(p for p in load_photos() if p["name"] == "motorcycle")
    depth = motorcycle["depth"]
    width, height = motorcycle["image"].size
    assert depth.shape == (height, width) and depth.dtype == np.float32
    valid = depth[np.isfinite(depth)]
    assert 0.85 < valid.size / depth.size < 1.0  # a few pixels lack ground truth and are NaN
    assert 1.5 < np.median(valid) < 4.0  # the scene is a couple of metres from the rig
    assert np.all(valid > 0)


def test_disparity_to_depth_formula():
    depth = disparity_to_depth(np.array([[0.0, 68.914, np.inf, np.nan]], dtype=np.float32))
    assert depth[0, 0] == pytest.approx(0.193001 * 994.978 / 31.086, rel=1e-5)
    assert depth[0, 1] == pytest.approx(0.193001 * 994.978 / 100.0, rel=1e-5)
    assert np.isnan(depth[0, 2]) and np.isnan(depth[0, 3])


def test_to_rgb_converts_grayscale_and_rgba():
    gray = _to_rgb(np.full((4, 5), 7, dtype=np.uint8))
    assert gray.mode == "RGB" and gray.size == (5, 4) and gray.getpixel((0, 0)) == (7, 7, 7)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[1, 1] = (255, 0, 0, 0)  # transparent becomes the white background
    image = _to_rgb(rgba)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 0, 0) and image.getpixel((1, 1)) == (255, 255, 255)
    with pytest.raises(ValueError, match="photo"):
        _to_rgb(np.zeros((2, 2, 2), dtype=np.uint8))
