"""One image reader: paths, PIL images, numpy arrays and tensors give the same pixels (16-bit scaled, bool 0/255)
or the same named error (values out of range, unreadable files with their path). Property tests throw random
dtypes, shapes and values at the pipeline's image input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fourm_hf import FourMImageProcessor
from fourm_hf.pipelines.call_inputs import load_image
from fourm_hf.processing.image_reading import UnreadableImageError, open_image

torch.set_num_threads(1)
PROCESSOR = FourMImageProcessor(image_size=16)


def pixels(image) -> np.ndarray:
    """What the pipeline gives the model for one image argument: load_image, then the image processor."""
    return PROCESSOR(images=load_image(image, "inputs[0]"))["pixel_values"]


def gradient16() -> np.ndarray:
    """A 16-bit gray gradient over the full range (PIL would clip it to white when converting)."""
    return np.linspace(0, 65535, 24 * 24).round().astype(np.uint16).reshape(24, 24)


def test_a_16_bit_png_is_scaled_the_same_as_path_pil_array_and_tensor(tmp_path):
    gray16 = gradient16()
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    rgb16 = np.repeat(gray16[..., None], 3, axis=-1)
    expected = pixels(np.round(rgb16 / 257.0).astype(np.uint8))
    for image in (str(path), path, Image.open(path), rgb16, torch.from_numpy(rgb16.astype(np.int32))):
        if isinstance(image, torch.Tensor):  # torch has no uint16 arithmetic everywhere: int32 holding 16-bit values
            with pytest.raises(ValueError, match=r"int32 pixels in \[0, 65535\]; expected 0\.\.255"):
                pixels(image)
            continue
        np.testing.assert_allclose(pixels(image), expected, atol=1e-6, err_msg=type(image).__name__)
    white = pixels(np.full((24, 24, 3), 255, np.uint8))
    assert (np.isclose(pixels(str(path)), white)).mean() < 0.05  # not "99.6 % white"


def test_bool_arrays_map_to_0_and_255():
    mask = np.zeros((24, 24, 3), bool)
    mask[:12] = True
    np.testing.assert_allclose(pixels(mask), pixels(mask.astype(np.uint8) * 255), atol=1e-6)
    np.testing.assert_allclose(pixels(torch.from_numpy(mask)), pixels(mask.astype(np.uint8) * 255), atol=1e-6)


def test_wide_integers_within_0_255_equal_uint8():
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3))
    for dtype in (np.int16, np.int32, np.int64, np.uint32):
        np.testing.assert_allclose(pixels(image.astype(dtype)), pixels(image.astype(np.uint8)), atol=1e-6)


@pytest.mark.parametrize("image, message", [
    (np.full((8, 8, 3), 300, np.int32), r"inputs\[0\]: int32 pixels in \[300, 300\]; expected 0\.\.255"),
    (np.full((8, 8, 3), -1, np.int16), r"int16 pixels in \[-1, -1\]"),
    (np.full((8, 8, 3), 1.5, np.float32), r"float pixels in \[1\.5, 1\.5\], expected \[0, 1\]"),
    (np.full((8, 8, 3), np.nan, np.float32), r"NaN or inf"),
    (np.full((8, 8, 3), 1 + 2j), r"dtype complex128"),
    (np.full((8, 8, 3), "a"), r"dtype <U1"),
    (torch.full((8, 8, 3), 2.0), r"float pixels in \[2, 2\]"),
    (np.zeros((8, 8)), r"expected \(H, W, 3\)"),
    (np.zeros((0, 8, 3), np.uint8), r"expected \(H, W, 3\) RGB with H, W >= 1"),
    (Image.new("F", (8, 8)), r"mode 'F'"),
    (Image.new("I", (8, 8), 70000), r"values in \[70000, 70000\]; expected 16-bit"),
    (3, r"expected a PIL image, a path"),
])
def test_out_of_range_or_malformed_images_are_named_errors(image, message):
    with pytest.raises(ValueError, match=message):
        pixels(image)


@pytest.mark.parametrize("content, reason", [
    (b"", "is empty"), (b"not an image at all", "cannot read the image file"), ("truncated", "cannot read the image file"),
])
def test_unreadable_files_name_their_path(tmp_path, content, reason):
    path = tmp_path / "broken.png"
    if content == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    for read in (lambda: pixels(str(path)), lambda: open_image(path, "image")):
        with pytest.raises(UnreadableImageError, match=reason) as caught:
            read()
        assert str(path) in str(caught.value) and isinstance(caught.value, ValueError)


def test_the_image_processor_refuses_instead_of_clipping():
    with pytest.raises(ValueError, match=r"uint16 pixels in \[0, 65535\] times rescale_factor"):
        FourMImageProcessor(image_size=16, rescale_factor=1 / 1000)(images=gradient16()[..., None].repeat(3, -1))
    with pytest.raises(ValueError, match=r"int64 pixels in \[0, 300\]"):
        PROCESSOR(images=np.arange(300 * 3).reshape(10, 30, 3) % 301)


DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    size = int(np.prod(shape))
    if dtype == np.bool_:
        values = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=size, max_size=size))
    else:
        values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=16), min_size=size, max_size=size))
    array = np.array(values, dtype=dtype).reshape(shape)
    return torch.from_numpy(array) if draw(st.booleans()) and dtype != np.uint16 else array


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays())
def test_random_image_arrays_give_pixels_in_range_or_a_named_error(image):
    """No raw library error and no silent result: either valid pixel_values or a ValueError naming the input."""
    try:
        values = pixels(image)
    except ValueError as error:
        assert "inputs[0]" in str(error), error
        return
    array = image.numpy() if isinstance(image, torch.Tensor) else image
    assert array.ndim == 3 and array.shape[-1] == 3 and min(array.shape[:2]) >= 1
    assert values.shape == (1, 3, 16, 16) and np.isfinite(values).all()
    if array.dtype.kind == "f":
        assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1
    elif array.dtype != np.uint16 and array.dtype != np.bool_:
        assert array.min() >= 0 and array.max() <= 255
