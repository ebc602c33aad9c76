"""FourMImageProcessor: the shared crop really is shared, flips, resampling, normalisation, errors, saving."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fourm_hf import FourMConfig
from fourm_hf.processing.image_processing_fourm import IMAGENET_MEAN, IMAGENET_STD, FourMImageProcessor

HEIGHT, WIDTH, SIZE = 30, 40, 16


def coordinate_sample():
    """Maps that encode pixel coordinates: semseg = row * W + col, depth = 1 + col, RGB = (col, row)."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([cols / (WIDTH - 1), rows / (HEIGHT - 1), np.full(cols.shape, 0.5)], axis=-1).astype(np.float32)
    return {"images": rgb, "depth": (1.0 + cols).astype(np.float32), "semseg": rows * WIDTH + cols}


def expected_source_coordinates(crop_box, flipped):
    """Continuous (pixel-centre) and nearest source coordinates of each output pixel."""
    left, top, right, bottom = crop_box
    index = np.arange(SIZE) + 0.5
    x = left + index * (right - left) / SIZE
    y = top + index * (bottom - top) / SIZE
    if flipped:
        x = x[::-1]
    return x - 0.5, y - 0.5, np.floor(x).astype(int), np.floor(y).astype(int)


@pytest.mark.parametrize("crop", [None, "center", "random"])
@pytest.mark.parametrize("flip", [False, True])
def test_one_crop_is_shared_by_all_modalities(crop, flip):
    processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=HEIGHT * WIDTH, crop_scale=(0.2, 1.0))
    out = processor(**coordinate_sample(), crop=crop, flip=flip, generator=np.random.default_rng(3))
    crop_box = out["crop_box"][0].tolist()
    assert bool(out["flipped"][0]) == flip
    x, y, nearest_x, nearest_y = expected_source_coordinates(crop_box, flip)

    semseg = out["semseg"][0]
    np.testing.assert_array_equal(semseg % WIDTH, np.broadcast_to(nearest_x, (SIZE, SIZE)))
    np.testing.assert_array_equal(semseg // WIDTH, np.broadcast_to(nearest_y[:, None], (SIZE, SIZE)))

    interior = (slice(2, -2), slice(2, -2))  # resampling filters are truncated at the image border
    depth_column = out["depth"][0, 0] - 1.0
    np.testing.assert_allclose(depth_column[interior], np.broadcast_to(x, (SIZE, SIZE))[interior], atol=0.1)
    rgb = out["tokenizer_rgb"][0] * 0.5 + 0.5
    np.testing.assert_allclose((rgb[0] * (WIDTH - 1))[interior], np.broadcast_to(x, (SIZE, SIZE))[interior], atol=0.1)
    np.testing.assert_allclose(
        (rgb[1] * (HEIGHT - 1))[interior], np.broadcast_to(y[:, None], (SIZE, SIZE))[interior], atol=0.1
    )


def test_boxes_follow_the_pixels_they_frame():
    semseg = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    semseg[10:20, 12:28] = 1  # the object's pixels; its box uses the pixel-edge convention
    object_box = {"label": "red cube", "box": [12 / WIDTH, 10 / HEIGHT, 28 / WIDTH, 20 / HEIGHT]}
    outside_box = {"label": "cone", "box": [0.0, 0.0, 4 / WIDTH, 1.0]}  # only in the 4 leftmost columns
    processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=2)
    for flip in (False, True):
        out = processor(semseg=semseg, boxes=[object_box, outside_box], crop="center", flip=flip)
        assert out["crop_box"][0].tolist() == [5, 0, 35, 30]
        assert out["dropped_boxes"] == [[outside_box]]
        (kept,) = out["boxes"][0]
        assert kept["label"] == "red cube"
        rows, cols = np.nonzero(out["semseg"][0] == 1)
        from_pixels = [cols.min() / SIZE, rows.min() / SIZE, (cols.max() + 1) / SIZE, (rows.max() + 1) / SIZE]
        np.testing.assert_allclose(kept["box"], from_pixels, atol=1.0 / SIZE)
    # a box partly outside the crop is clipped to [0, 1], not dropped
    partial = {"label": "ball", "box": [0.0, 0.0, 0.5, 0.5]}
    out = processor(semseg=semseg, boxes=[partial], crop="center")
    np.testing.assert_allclose(out["boxes"][0][0]["box"], [0.0, 0.0, (20 - 5) / 30, 15 / 30])


def test_crop_parameters_travel_and_reapply_later():
    sample = coordinate_sample()
    processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=HEIGHT * WIDTH, flip_probability=0.5)
    batch = {name: [value, value[::-1].copy(), value[:, ::-1].copy()] for name, value in sample.items()}
    joint = processor(**batch, crop="random", generator=np.random.default_rng(7))
    rgb_only = processor(images=batch["images"], crop="random", generator=np.random.default_rng(7))
    np.testing.assert_array_equal(joint["crop_box"], rgb_only["crop_box"])
    np.testing.assert_array_equal(joint["flipped"], rgb_only["flipped"])
    later = processor(semseg=batch["semseg"], crop_box=rgb_only["crop_box"], flip=rgb_only["flipped"])
    np.testing.assert_array_equal(later["semseg"], joint["semseg"])
    np.testing.assert_array_equal(later["crop_box"], joint["crop_box"])


def test_random_crop_is_seeded_and_within_ranges():
    processor = FourMImageProcessor(image_size=SIZE, crop_scale=(0.3, 0.6), crop_ratio=(0.5, 2.0))
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    boxes_a = [processor(images=image, crop="random", generator=np.random.default_rng(s))["crop_box"][0] for s in range(20)]
    boxes_b = [processor(images=image, crop="random", generator=np.random.default_rng(s))["crop_box"][0] for s in range(20)]
    np.testing.assert_array_equal(boxes_a, boxes_b)
    assert len({tuple(box) for box in boxes_a}) > 10
    for left, top, right, bottom in boxes_a:
        width, height = right - left, bottom - top
        assert 0 <= left < right <= 120 and 0 <= top < bottom <= 100
        assert 0.28 <= width * height / (100 * 120) <= 0.62
        assert 0.45 <= width / height <= 2.1
    with pytest.raises(ValueError, match="generator"):
        processor(images=image, crop="random")
    with pytest.raises(ValueError, match="generator"):
        processor(images=image, flip_probability=0.5)


def test_flip_negates_normal_x_and_mirrors():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(HEIGHT, WIDTH, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    processor = FourMImageProcessor(image_size=SIZE)
    plain = processor(normal=normal)["normal"][0]
    flipped = processor(normal=normal, flip=True)["normal"][0]
    np.testing.assert_allclose(flipped[0], -plain[0][:, ::-1], atol=1e-6)
    np.testing.assert_allclose(flipped[1:], plain[1:][:, :, ::-1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=0), 1.0, atol=1e-5)  # re-normalised
    constant = np.broadcast_to(np.float32([0.6, 0.0, -0.8]), (HEIGHT, WIDTH, 3)).copy()
    out = processor(normal=constant, flip=True)["normal"][0]
    np.testing.assert_allclose(out.reshape(3, -1).T, np.broadcast_to([-0.6, 0.0, -0.8], (SIZE * SIZE, 3)), atol=1e-6)
    encoded = processor(normal=np.full((4, 4, 3), 255, dtype=np.uint8))["normal"][0]  # uint8: v / 255 * 2 - 1
    np.testing.assert_allclose(encoded[:, 0, 0], np.full(3, 1 / np.sqrt(3)), atol=1e-6)


def test_semseg_stays_integer_without_new_ids():
    rng = np.random.default_rng(1)
    semseg = np.repeat(np.repeat(rng.choice([0, 3, 7], size=(6, 8)), 5, axis=0), 5, axis=1)
    processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=8)
    out = processor(semseg=semseg.astype(np.uint8), crop="random", flip_probability=0.5, generator=rng, return_tensors="pt")
    assert out["semseg"].dtype == torch.int64
    assert set(out["semseg"].unique().tolist()) <= {0, 3, 7}


def test_normalisation_per_modality():
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    image[...] = (255, 128, 0)
    processor = FourMImageProcessor(image_size=8)
    out = processor(images=image, depth=np.full((20, 20), 2.5, np.float32))
    rgb = np.array([1.0, 128 / 255, 0.0])
    expected_pixels = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out["pixel_values"][0].reshape(3, -1).T, np.broadcast_to(expected_pixels, (64, 3)), atol=1e-5)
    np.testing.assert_allclose(out["tokenizer_rgb"][0].reshape(3, -1).T, np.broadcast_to(rgb * 2 - 1, (64, 3)), atol=1e-5)
    assert out["depth"].dtype == np.float32
    np.testing.assert_allclose(out["depth"], 2.5, atol=1e-5)  # metres, unscaled


@pytest.mark.parametrize("depth_resample", ["bilinear", "nearest"])
def test_invalid_depth_does_not_bleed(depth_resample):
    depth = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    depth[:, :17] = 3.0  # right part invalid (0)
    depth[5:9, 3:7] = 0.0  # an invalid hole inside the valid part
    out = FourMImageProcessor(image_size=SIZE, depth_resample=depth_resample)(depth=depth)["depth"][0, 0]
    values = np.unique(np.round(out, 5))
    assert set(values.tolist()) <= {0.0, 3.0}, values  # never a blend of 3 m and "invalid"
    assert (out[:, :4] == 3.0).sum() > 0 and (out[:, -4:] == 0.0).all()


def test_pil_inputs_and_alpha_is_dropped():
    processor = FourMImageProcessor(image_size=4)
    rgba = Image.new("RGBA", (6, 6), (10, 20, 30, 0))  # fully transparent: colour kept as stored
    gray = Image.new("L", (6, 6), 100)
    out = processor(images=[rgba, gray])
    tokenizer_rgb = out["tokenizer_rgb"] * 0.5 + 0.5
    np.testing.assert_allclose(tokenizer_rgb[0, :, 0, 0], np.array([10, 20, 30]) / 255, atol=1e-5)
    np.testing.assert_allclose(tokenizer_rgb[1, :, 0, 0], np.full(3, 100 / 255), atol=1e-5)
    float_image = np.full((6, 6, 3), 0.25, dtype=np.float32)
    np.testing.assert_allclose(processor(images=float_image)["tokenizer_rgb"], -0.5, atol=1e-5)
    depth = processor(depth=Image.fromarray(np.full((6, 6), 1.5, np.float32)))["depth"]
    np.testing.assert_allclose(depth, 1.5, atol=1e-6)
    semseg = processor(semseg=Image.fromarray(np.full((6, 6), 5, np.uint8)))["semseg"]
    assert semseg.dtype == np.int64 and (semseg == 5).all()


def test_batch_outputs_and_tensors():
    processor = FourMImageProcessor(image_size=8, num_semseg_classes=4)
    images = [np.zeros((10, 12, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)]
    depths = [np.ones((10, 12), np.float32), np.ones((12, 10), np.float32)]
    normals = [np.zeros((10, 12, 3), np.float32), np.zeros((12, 10, 3), np.float32)]
    semsegs = [np.zeros((10, 12), np.int64), np.ones((12, 10), np.int64)]
    boxes = [[{"label": "a", "box": [0, 0, 1, 1]}], []]
    out = processor(images=images, depth=depths, normal=normals, semseg=semsegs, boxes=boxes, return_tensors="pt")
    assert out["pixel_values"].shape == (2, 3, 8, 8) and out["pixel_values"].dtype == torch.float32
    assert out["tokenizer_rgb"].shape == (2, 3, 8, 8)
    assert out["depth"].shape == (2, 1, 8, 8)
    assert out["normal"].shape == (2, 3, 8, 8)
    assert out["semseg"].shape == (2, 8, 8) and out["semseg"].dtype == torch.int64
    assert out["crop_box"].tolist() == [[1, 0, 11, 10], [0, 1, 10, 11]]
    assert out["original_size"].tolist() == [[10, 12], [12, 10]]
    assert out["boxes"][1] == [] and out["dropped_boxes"] == [[], []]
    assert out["boxes"][0][0]["box"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    whole = processor(images=images[0], crop=None)
    assert whole["crop_box"].tolist() == [[0, 0, 12, 10]] and isinstance(whole["pixel_values"], np.ndarray)


def _bad_calls():
    good_rgb = np.zeros((8, 8, 3), np.uint8)
    box = {"label": "a", "box": [0.1, 0.1, 0.5, 0.5]}
    return [
        (dict(images=np.zeros((8, 8, 4), np.uint8), do_convert_rgb=False), r"images\[0\].*\(H, W, 3\).*do_convert_rgb"),
        (dict(images=np.zeros((8, 8, 2), np.uint8)), r"images\[0\].*C in \{1, 3, 4\}"),
        (dict(images=np.zeros((8, 8), np.uint8), do_convert_rgb=False), r"images\[0\].*\(H, W, 3\)"),
        (dict(images=np.zeros((4, 8, 8), np.uint8), input_data_format="channels_last"), r"images\[0\].*not channels_last"),
        (dict(images=np.full((8, 8, 3), 200.0)), r"images\[0\].*\[0, 1\]"),
        (dict(images=Image.new("F", (8, 8))), r"images\[0\].*PIL mode"),  # mode "I" (16-bit) is scaled, not refused
        (dict(depth=np.full((8, 8), np.nan)), r"depth\[0\].*NaN"),
        (dict(depth=np.full((8, 8), -1.0)), r"depth\[0\].*negative"),
        (dict(depth=np.zeros((8, 8, 2))), r"depth\[0\].*shape"),
        (dict(normal=np.full((8, 8, 3), 2.0)), r"normal\[0\].*\[-1, 1\]"),
        (dict(normal=np.zeros((8, 8))), r"normal\[0\].*\(H, W, 3\)"),
        (dict(semseg=np.full((8, 8), 9)), r"semseg\[0\].*class id 9"),
        (dict(semseg=np.zeros((8, 8), np.float32)), r"semseg\[0\].*integer"),
        (dict(images=good_rgb, boxes=[{"label": "a", "box": [0.1, 0.1, 1.5, 0.5]}]), r"boxes\[0\]\[0\].*outside \[0, 1\]"),
        (dict(images=good_rgb, boxes=[{"label": "a", "box": [0.6, 0.1, 0.5, 0.5]}]), r"boxes\[0\]\[0\].*xmin > xmax"),
        (dict(images=good_rgb, boxes=[{"label": "a"}]), r"boxes\[0\]\[0\].*'box'"),
        (dict(images=good_rgb, depth=np.ones((8, 9))), r"sample 0.*different sizes.*depth"),
        (dict(images=[good_rgb, good_rgb], depth=[np.ones((8, 8))]), r"depth has 1 samples"),
        (dict(images=[good_rgb], depth=np.ones((8, 8))), r"batches \(lists\)"),
        (dict(images=good_rgb, crop="middle"), r"crop must be one of"),
        (dict(images=good_rgb, crop_box=[0, 0, 9, 8]), r"crop_box\[0\].*inside"),
        (dict(images=good_rgb, crop_box=[0, 0, 4, 4], crop="random"), r"either crop='random'"),
        (dict(boxes=[box]), r"at least one of"),
        (dict(images=good_rgb, return_tensors="tf"), r"return_tensors"),
    ]


@pytest.mark.parametrize("kwargs, message", _bad_calls())
def test_bad_input_is_a_clear_error(kwargs, message):
    processor = FourMImageProcessor(image_size=4, num_semseg_classes=5)
    with pytest.raises(ValueError, match=message):
        processor(**kwargs)


def test_bad_types_and_settings():
    with pytest.raises(TypeError, match=r"depth\[0\].*torch tensor"):  # images may be tensors, the maps not
        FourMImageProcessor(image_size=4)(depth=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="rgb_resample"):
        FourMImageProcessor(rgb_resample="lanczos")
    with pytest.raises(ValueError, match="crop_scale"):
        FourMImageProcessor(crop_scale=(0.5, 2.0))


def test_save_and_load_round_trip(tmp_path):
    from transformers import AutoImageProcessor

    processor = FourMImageProcessor(
        image_size=12, rgb_resample="bilinear", crop_scale=(0.5, 1.0), num_semseg_classes=6, semseg_ignore_index=255
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "FourMImageProcessor" and saved["semseg_ignore_index"] == 255
    for loaded in (FourMImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is FourMImageProcessor
        assert loaded.to_dict() == processor.to_dict()
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded(images=image)["pixel_values"], processor(images=image)["pixel_values"])
    assert FourMImageProcessor.from_pretrained(tmp_path, image_size=20).image_size == 20
    # next to a FourMConfig, as in a full model folder
    FourMConfig().save_pretrained(tmp_path)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is FourMImageProcessor


def test_fresh_process_loads_saved_folder(tmp_path):
    FourMImageProcessor(image_size=12, num_semseg_classes=6).save_pretrained(tmp_path)
    image_check = "import numpy as np; out = p(images=np.zeros((20, 30, 3), np.uint8)); print(type(p).__module__, tuple(out['pixel_values'].shape))"
    with_package = (
        "import fourm_hf; from transformers import AutoImageProcessor; "
        f"p = AutoImageProcessor.from_pretrained({str(tmp_path)!r}); {image_check}"
    )
    # without fourm_hf: the folder's own copy of the module (auto_map + trust_remote_code)
    remote_code = (
        "import sys; from transformers import AutoImageProcessor; "
        f"p = AutoImageProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True); "
        f"assert 'fourm_hf' not in sys.modules; {image_check}"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    for code, module in ((with_package, "fourm_hf.processing"), (remote_code, "transformers_modules")):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert module in result.stdout and "(1, 3, 12, 12)" in result.stdout


# ---- transformers' image-processor options: rescale, normalize, tensors, call-time overrides ----------
def _uint8_image(seed=0, height=20, width=24):
    return (np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8)


def test_torch_tensor_images_in_either_layout_match_numpy():
    import torch

    processor = FourMImageProcessor(image_size=16)
    image = _uint8_image()
    expected = processor(images=image)["pixel_values"]
    for tensor, data_format in ((torch.from_numpy(image), None), (torch.from_numpy(image).permute(2, 0, 1), None),
                                (torch.from_numpy(image).permute(2, 0, 1), "channels_first")):
        np.testing.assert_array_equal(processor(images=tensor, input_data_format=data_format)["pixel_values"], expected)
    with pytest.raises(ValueError, match="not channels_last"):
        processor(images=torch.from_numpy(image).permute(2, 0, 1), input_data_format="channels_last")


def test_rescale_and_normalize_are_honoured():
    image = _uint8_image()
    processor = FourMImageProcessor(image_size=16)
    normalised = processor(images=image)["pixel_values"]
    raw = processor(images=image, do_normalize=False)["pixel_values"]
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    mean = np.asarray(processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(processor.image_std, dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(normalised, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(processor(images=image.astype(np.float32) / 255, do_rescale=False)["pixel_values"], normalised)
    sixteen_bit = FourMImageProcessor(image_size=16, rescale_factor=1 / 65535)
    np.testing.assert_allclose(sixteen_bit(images=image.astype(np.uint16) * 257)["pixel_values"], normalised, atol=1e-5)
    no_normalize = FourMImageProcessor(image_size=16, do_normalize=False)
    np.testing.assert_array_equal(no_normalize(images=image)["pixel_values"], raw)
    halves = processor(images=image, image_mean=[0.5] * 3, image_std=[0.5] * 3)["pixel_values"]
    np.testing.assert_allclose(halves, raw * 2 - 1, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do_rescale=False"):
        processor(images=image, do_rescale=False)


def test_convert_rgb_and_unknown_options():
    processor = FourMImageProcessor(image_size=16)
    gray = Image.fromarray(_uint8_image()).convert("L")
    assert processor(images=gray)["pixel_values"].shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="do_convert_rgb=True"):
        processor(images=gray, do_convert_rgb=False)
    with pytest.raises(TypeError, match="unknown option"):
        processor(images=_uint8_image(), do_resize=True)
    with pytest.raises(ValueError, match="image_std must be positive"):
        processor(images=_uint8_image(), image_std=[0.0, 1.0, 1.0])


def test_convert_rgb_of_gray_and_rgba_arrays_matches_pil():
    """do_convert_rgb on arrays / tensors does what Image.convert("RGB") does: gray repeated, alpha dropped."""
    processor = FourMImageProcessor(image_size=16)
    rgba = np.random.RandomState(1).randint(0, 256, (20, 24, 4)).astype(np.uint8)
    gray = rgba[..., 0]
    for array, mode in ((rgba, "RGBA"), (gray, "L")):
        expected = processor(images=Image.fromarray(array, mode=mode))["pixel_values"]
        channels_first = np.moveaxis(array[..., None] if array.ndim == 2 else array, -1, 0)
        for given in (array, channels_first, torch.from_numpy(channels_first), torch.from_numpy(np.ascontiguousarray(array))):
            np.testing.assert_array_equal(processor(images=given)["pixel_values"], expected)
    batch = processor(images=[rgba, gray[..., None], Image.fromarray(rgba[..., :3])], return_tensors="pt")
    assert tuple(batch["pixel_values"].shape) == (3, 3, 16, 16)
    np.testing.assert_array_equal(batch["pixel_values"][0].numpy(), batch["pixel_values"][2].numpy())


def test_rescale_settings_round_trip(tmp_path):
    processor = FourMImageProcessor(image_size=16, do_normalize=False, rescale_factor=0.5 / 255)
    processor.save_pretrained(tmp_path)
    reloaded = FourMImageProcessor.from_pretrained(tmp_path)
    assert (reloaded.do_normalize, reloaded.rescale_factor, reloaded.do_rescale) == (False, 0.5 / 255, True)
