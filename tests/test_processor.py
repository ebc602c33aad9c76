"""FourMProcessor: raw modalities -> token dict -> decoded arrays / images / text / boxes; save/load; bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

import fourm_hf  # noqa: F401  (registers the Auto classes)
from conftest import subprocess_env
from fourm_hf.configuration_fourm import FourMConfig
from fourm_hf.data.scenes import SCENE_CLASSES, render_scene
from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.text.tokenization_fourm import train_text_tokenizer
from fourm_hf.processing.visualization import colorize_depth, colorize_normals, colorize_semseg, semseg_palette
from fourm_hf.testing_utils import tiny_vqvae as make_tiny_vqvae
from fourm_hf.tokenizers.vqvae import FourMVQVAE, FourMVQVAEConfig

SIZE, PATCH, SCENE_SIZE, COORD_BINS = 32, 8, 48, 64
GRID = SIZE // PATCH


def tiny_vqvae(kind, seed=0):
    return make_tiny_vqvae(kind, image_size=SIZE, patch_size=PATCH, seed=seed)


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(seed, SCENE_SIZE) for seed in range(3)]


@pytest.fixture(scope="module")
def processor(scenes):
    labels = sorted({box["label"] for scene in scenes for box in scene["boxes"]})
    tokenizer = train_text_tokenizer([s["caption"] for s in scenes], vocab_size=200, class_names=labels,
                                     num_sentinels=16, coord_bins=COORD_BINS)
    image_processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES))
    vqvaes = {f"tok_{kind}": tiny_vqvae(kind, seed) for seed, kind in enumerate(("rgb", "depth", "normal", "semseg"))}
    return FourMProcessor(image_processor, tokenizer, vqvaes=vqvaes, max_text_length=128)


def all_inputs(scenes):
    return dict(
        images=[s["rgb"] for s in scenes],
        depth=[s["depth"] for s in scenes],
        normal=[s["normal"] for s in scenes],
        semseg=[s["semseg"] for s in scenes],
        boxes=[s["boxes"] for s in scenes],
        text=[s["caption"] for s in scenes],
    )


@pytest.fixture(scope="module")
def tokens(processor, scenes):
    return processor(**all_inputs(scenes))


# ---- encoding -------------------------------------------------------------------------------------------
def test_token_dict_layout(processor, tokens, scenes):
    batch = len(scenes)
    assert sorted(tokens) == ["caption", "det", "pixel_values", "tok_depth", "tok_normal", "tok_rgb", "tok_semseg"]
    assert isinstance(tokens, dict)
    for name in ("tok_rgb", "tok_depth", "tok_normal", "tok_semseg"):
        assert tokens[name].dtype == torch.int64 and tokens[name].shape == (batch, GRID * GRID)
        assert 0 <= tokens[name].min() and tokens[name].max() < 256
    assert tokens["pixel_values"].dtype == torch.float32 and tokens["pixel_values"].shape == (batch, 3, SIZE, SIZE)
    eos, pad = processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id
    for name in ("caption", "det"):
        ids = tokens[name]
        assert ids.dtype == torch.int64 and ids.shape[0] == batch
        for row in ids.tolist():
            length = sum(1 for v in row if v != pad)
            assert row[length - 1] == eos and all(v == pad for v in row[length:]) and pad not in row[:length]
    expected = [processor.tokenizer.encode_for_model(s["caption"]) for s in scenes]
    assert [row[: len(e)] for row, e in zip(tokens["caption"].tolist(), expected)] == expected


def test_tokens_are_the_vqvae_codes_of_the_shared_crop(processor, tokens, scenes):
    maps = processor.image_processor(
        images=[s["rgb"] for s in scenes], depth=[s["depth"] for s in scenes], semseg=[s["semseg"] for s in scenes],
        crop="center", return_tensors="pt",
    )
    depth_ids = processor.vqvaes["tok_depth"].encode(maps["depth"]).reshape(len(scenes), -1)
    semseg_ids = processor.vqvaes["tok_semseg"].encode(maps["semseg"]).reshape(len(scenes), -1)
    rgb_ids = processor.vqvaes["tok_rgb"].encode(maps["tokenizer_rgb"]).reshape(len(scenes), -1)
    assert torch.equal(tokens["tok_depth"], depth_ids)
    assert torch.equal(tokens["tok_semseg"], semseg_ids)
    assert torch.equal(tokens["tok_rgb"], rgb_ids)
    torch.testing.assert_close(tokens["pixel_values"], maps["pixel_values"])


def test_single_sample_and_random_crop_with_generator(processor, scenes):
    scene = scenes[0]
    single = processor(images=scene["rgb"], depth=scene["depth"], text=scene["caption"])
    assert single["tok_depth"].shape == (1, GRID * GRID) and single["caption"].shape[0] == 1
    first = processor(depth=scene["depth"], crop="random", generator=np.random.default_rng(5))
    again = processor(depth=scene["depth"], crop="random", generator=np.random.default_rng(5))
    assert torch.equal(first["tok_depth"], again["tok_depth"])
    as_numpy = processor(depth=scene["depth"], return_tensors="np")
    assert isinstance(as_numpy["tok_depth"], np.ndarray) and as_numpy["tok_depth"].dtype == np.int64


def test_boxes_follow_the_crop(processor, scenes):
    scene = scenes[1]
    crop_box = np.array([8, 4, 40, 36])  # a 32 x 32 window of the 48 x 48 scene
    out = processor(images=scene["rgb"], boxes=scene["boxes"], crop_box=crop_box)
    decoded = processor.decode({"det": out["det"]})["det"]["boxes"][0]
    expected = processor.image_processor(images=scene["rgb"], boxes=scene["boxes"], crop_box=crop_box)["boxes"][0]
    assert len(decoded) == len(expected) > 0
    half_bin = 0.5 / (COORD_BINS - 1) + 1e-6
    expected = sorted(expected, key=lambda b: np.hypot(b["box"][0], b["box"][1]))
    for got, want in zip(decoded, expected):
        assert got["label"] == want["label"]
        np.testing.assert_allclose(got["box"], want["box"], atol=half_bin)
    boxes_only = processor(boxes=[{"label": "red cube", "box": [0.1, 0.2, 0.3, 0.4]}])
    assert processor.decode(boxes_only)["det"]["boxes"][0][0]["label"] == "red cube"


def test_model_input_names_are_the_keys_of_a_call_with_images_and_text(processor, tokens, scenes):
    assert processor.model_input_names == ["pixel_values", "tok_rgb", "caption"]
    images, captions = [s["rgb"] for s in scenes], [s["caption"] for s in scenes]
    assert set(processor(images=images, text=captions)) == set(processor.model_input_names)
    # every other argument adds its own modality's key
    assert set(tokens) == {*processor.model_input_names, "tok_depth", "tok_normal", "tok_semseg", "det"}
    pixels_and_text = FourMProcessor(processor.image_processor, processor.tokenizer)
    assert pixels_and_text.model_input_names == ["pixel_values", "caption"]
    assert set(pixels_and_text(images=images, text=captions)) == set(pixels_and_text.model_input_names)


def test_images_given_as_one_list_per_sample(processor, scenes):
    images, captions = [s["rgb"] for s in scenes], [s["caption"] for s in scenes]
    flat = processor(images=images, text=captions)
    nested = processor(images=[[image] for image in images], text=captions)
    assert set(nested) == set(flat)
    for name in flat:
        assert torch.equal(nested[name], flat[name]), name
    with pytest.raises(ValueError, match=r"images\[0\]: a 4M sample holds exactly one RGB image, got a list of 0"):
        processor(images=[[]] + [[image] for image in images[1:]], text=captions)
    with pytest.raises(ValueError, match=r"images\[1\]: .* got a list of 2"):
        processor(images=[[images[0]], [images[1], images[2]], [images[2]]], text=captions)


def test_text_kwargs_shape_caption_and_det(processor, scenes):
    captions, boxes = [s["caption"] for s in scenes], [s["boxes"] for s in scenes]
    ids = [processor.tokenizer.encode_for_model(c) for c in captions]
    longest = max(len(row) for row in ids)
    default = processor(text=captions)["caption"]
    assert default.shape == (len(scenes), longest)
    for call in (dict(padding="max_length", max_length=100), dict(text_kwargs={"padding": "max_length", "max_length": 100}),
                 dict(common_kwargs={"return_tensors": "pt"}, text_kwargs={"padding": "max_length"}, max_length=100)):
        out = processor(text=captions, boxes=boxes, **call)
        assert out["caption"].shape == (len(scenes), 100) and out["det"].shape == (len(scenes), 100), call
        assert out["caption"][:, :longest].tolist() == default.tolist()
    assert processor(text=captions, pad_to_multiple_of=16)["caption"].shape[1] == -(-longest // 16) * 16
    # max_text_length (128 here) is the default max_length: padding to it, and the bound of a row
    assert processor(text=captions, padding="max_length")["caption"].shape[1] == 128
    short = min(len(row) for row in ids)
    with pytest.raises(ValueError, match=rf"caption: {longest} tokens \(with \[EOS\]\) exceed max_length={short}.*truncation=True"):
        processor(text=captions, max_length=short)
    cut = processor(text=captions, max_length=short, truncation=True)["caption"]
    eos = processor.tokenizer.eos_token_id
    assert cut.shape == (len(scenes), short)
    assert [row[:-1] for row in cut.tolist()] == [row[: short - 1] for row in ids] and (cut[:, -1] == eos).all()


def test_text_kwargs_4m_cannot_honour_are_rejected(processor, scenes):
    captions = [s["caption"] for s in scenes]
    with pytest.raises(ValueError, match=r"padding=False but the rows have different lengths"):
        processor(text=captions, padding=False)
    assert processor(text=captions[:1], padding=False)["caption"].shape[0] == 1
    with pytest.raises(ValueError, match=r"padding_side='left'.*padded on the right"):
        processor(text=captions, padding_side="left")
    with pytest.raises(ValueError, match=r"return_attention_mask=True is not supported"):
        processor(text=captions, return_attention_mask=True)
    with pytest.raises(ValueError, match=r"padding was passed two times"):
        processor(text=captions, padding="longest", text_kwargs={"padding": "max_length"})
    with pytest.raises(ValueError, match=r"return_tensors must be 'pt', 'np' or None"):
        processor(text=captions, return_tensors="tf")
    with pytest.raises(ValueError, match=r"return_tensors is 'pt' in text_kwargs but 'np' in images_kwargs"):
        processor(text=captions, images_kwargs={"return_tensors": "np"})
    both = processor(images=scenes[0]["rgb"], text=captions[0], common_kwargs={"return_tensors": "np"})
    assert all(isinstance(value, np.ndarray) for value in both.values())
    with pytest.raises(ValueError, match=r"4M takes no videos"):
        processor(text=captions, videos=[np.zeros((2, 8, 8, 3), np.uint8)])
    as_numpy = processor(text=captions, return_tensors=None)["caption"]
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.int64


def test_images_kwargs_reach_the_image_processor(processor, scenes):
    scene = scenes[0]
    plain = processor.image_processor(images=scene["rgb"], do_normalize=False)["pixel_values"]
    for call in (dict(do_normalize=False), dict(images_kwargs={"do_normalize": False})):
        np.testing.assert_array_equal(processor(images=scene["rgb"], **call)["pixel_values"].numpy(), plain)
    crop_box = np.array([8, 4, 40, 36])
    expected = processor.image_processor(depth=scene["depth"], crop_box=crop_box)["depth"]
    for call in (dict(crop_box=crop_box), dict(images_kwargs={"crop_box": crop_box})):
        ids = processor(depth=scene["depth"], **call)["tok_depth"]
        assert torch.equal(ids, processor.encode_maps({"depth": expected})["tok_depth"])
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['size'\]"):
        processor(images=scene["rgb"], size={"height": 8, "width": 8})


def test_a_generator_is_used_not_copied(processor, scenes):
    """Random crops advance the caller's generator (transformers deep-copies the other keywords)."""
    depth = scenes[0]["depth"]
    for how in ("flat", "images_kwargs"):
        rng, reference = np.random.default_rng(3), np.random.default_rng(3)
        crops = []
        for _ in range(2):
            call = dict(generator=rng) if how == "flat" else dict(images_kwargs={"generator": rng})
            crops.append(processor(depth=depth, crop="random", **call)["tok_depth"])
        expected = [processor.image_processor(depth=depth, crop="random", generator=reference)["depth"] for _ in range(2)]
        assert not np.array_equal(expected[0], expected[1])
        for got, want in zip(crops, expected):
            assert torch.equal(got, processor.encode_maps({"depth": want})["tok_depth"]), how
    with pytest.raises(ValueError, match=r"generator was passed two times"):
        processor(depth=depth, crop="random", generator=np.random.default_rng(0),
                  images_kwargs={"generator": np.random.default_rng(0)})


# ---- decoding -------------------------------------------------------------------------------------------
def test_decode_gives_images_arrays_text_and_boxes(processor, tokens, scenes):
    scores = [[0.5 + 0.1 * j for j in range(len(s["boxes"]))] for s in scenes]
    decoded = processor.decode(tokens, box_scores=scores)
    batch = len(scenes)
    for name in ("tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "rgb"):
        assert len(decoded[name]["image"]) == batch
        for image in decoded[name]["image"]:
            assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (SIZE, SIZE)
    assert decoded["tok_rgb"]["array"].dtype == np.uint8 and decoded["tok_rgb"]["array"].shape == (batch, SIZE, SIZE, 3)
    depth = decoded["tok_depth"]["array"]
    assert depth.dtype == np.float32 and depth.shape == (batch, SIZE, SIZE) and (depth > 0).all()
    normal = decoded["tok_normal"]["array"]
    assert normal.shape == (batch, SIZE, SIZE, 3)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-4)
    semseg = decoded["tok_semseg"]["array"]
    assert semseg.dtype == np.int64 and semseg.shape == (batch, SIZE, SIZE)
    assert semseg.min() >= 0 and semseg.max() < len(SCENE_CLASSES)
    # the rendered images are exactly the colour mappings of the arrays
    np.testing.assert_array_equal(np.asarray(decoded["tok_depth"]["image"][0]), colorize_depth(depth[0]))
    np.testing.assert_array_equal(np.asarray(decoded["tok_semseg"]["image"][1]), colorize_semseg(semseg[1], len(SCENE_CLASSES)))
    # text round trip is exact; the pixels come back as the cropped image (uint8 rounding only)
    assert decoded["caption"] == [s["caption"] for s in scenes]
    resized = processor.image_processor(images=[s["rgb"] for s in scenes])["tokenizer_rgb"]
    expected_rgb = np.round((resized.transpose(0, 2, 3, 1) + 1) * 127.5)
    assert np.abs(decoded["rgb"]["array"].astype(np.int64) - expected_rgb).max() <= 1
    # boxes: labels, scores passed in, drawn on the decoded RGB image
    for sample, scene_scores in zip(decoded["det"]["boxes"], scores):
        assert [box["score"] for box in sample] == pytest.approx(scene_scores)
        assert all(set(box) == {"label", "score", "box"} for box in sample)
    drawn = decoded["det"]["image"][0]
    assert drawn.size == (SIZE, SIZE) and np.any(np.asarray(drawn) != decoded["tok_rgb"]["array"][0])
    assert processor.decode({"det": tokens["det"][:1]})["det"]["boxes"][0][0]["score"] is None


def test_decode_accepts_one_unbatched_sample_and_forwards_plain_ids(processor, tokens):
    one = processor.decode({"tok_depth": tokens["tok_depth"][0], "caption": tokens["caption"][0].tolist()})
    assert one["tok_depth"]["array"].shape == (1, SIZE, SIZE) and len(one["caption"]) == 1
    assert isinstance(processor.decode(tokens["caption"][0].tolist()), str)


def test_visualization_helpers():
    depth = np.array([[1.0, 2.0], [8.0, 0.0]], dtype=np.float32)
    image = colorize_depth(depth, near=1.0, far=8.0)
    assert image.dtype == np.uint8 and image.shape == (2, 2, 3)
    assert image[0, 0].sum() > image[1, 0].sum()  # near is brighter than far
    assert (image[1, 1] == 0).all()  # invalid depth is black
    normals = np.zeros((1, 2, 3), np.float32)
    normals[0, 0] = (1, 0, 0)
    normals[0, 1] = (0, 0, -1)
    np.testing.assert_array_equal(colorize_normals(normals)[0], [[255, 128, 128], [128, 128, 0]])
    palette = semseg_palette(40)
    assert palette.shape == (40, 3) and len({tuple(c) for c in palette}) == 40
    np.testing.assert_array_equal(colorize_semseg(np.array([[0, 1], [39, 99]]), palette=palette)[1, 1], [0, 0, 0])


# ---- save / load ----------------------------------------------------------------------------------------
def test_auto_processor_round_trip(processor, tokens, scenes, tmp_path):
    processor.save_pretrained(tmp_path)
    for name in processor.vqvaes:
        assert (tmp_path / "vqvae" / name / "config.json").is_file()
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["vqvae_modalities"] == sorted(processor.vqvaes) and config["max_text_length"] == 128
    assert config["auto_map"]["AutoProcessor"] == "processing_fourm.FourMProcessor"
    # the model's config saved into the same folder does not disturb the processor
    FourMConfig(image_size=SIZE, patch_size=PATCH).save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is FourMProcessor and type(AutoImageProcessor.from_pretrained(tmp_path)) is FourMImageProcessor
    again = loaded(**all_inputs(scenes))
    assert sorted(again) == sorted(tokens)
    for name in tokens:
        assert torch.equal(again[name], tokens[name]), name
    for name, vqvae in loaded.vqvaes.items():
        assert not vqvae.training and not any(p.requires_grad for p in vqvae.parameters())
        for key, value in processor.vqvaes[name].state_dict().items():
            assert torch.equal(value, vqvae.state_dict()[key]), (name, key)
    assert loaded.decode(tokens)["caption"] == processor.decode(tokens)["caption"]


def test_from_pretrained_takes_components_and_component_options(processor, scenes, tmp_path):
    processor.save_pretrained(tmp_path)
    scene = scenes[0]
    other_tokenizer = train_text_tokenizer(["a small red cube"], vocab_size=120, num_sentinels=16, coord_bins=COORD_BINS)
    replaced = FourMProcessor.from_pretrained(tmp_path, tokenizer=other_tokenizer, vqvaes={}, max_text_length=32)
    assert replaced.tokenizer is other_tokenizer and replaced.vqvaes == {} and replaced.max_text_length == 32
    assert replaced.image_processor.to_dict() == processor.image_processor.to_dict()
    image_processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES), do_normalize=False)
    assert AutoProcessor.from_pretrained(tmp_path, image_processor=image_processor).image_processor is image_processor
    # other keywords go to the components, as in transformers processors
    loaded = AutoProcessor.from_pretrained(tmp_path, do_normalize=False, crop_scale=[0.5, 1.0], padding="max_length",
                                           max_length=40, not_an_option=1)
    assert loaded.image_processor.do_normalize is False and loaded.image_processor.crop_scale == [0.5, 1.0]
    assert loaded.tokenizer.init_kwargs["not_an_option"] == 1 and not hasattr(loaded.image_processor, "not_an_option")
    plain = processor.image_processor(images=scene["rgb"], do_normalize=False)["pixel_values"]
    out = loaded(images=scene["rgb"], text=scene["caption"])
    np.testing.assert_array_equal(out["pixel_values"].numpy(), plain)
    assert out["caption"].shape == (1, 40)  # the tokenizer's init kwargs are call defaults
    assert loaded.max_text_length == 128 and sorted(loaded.vqvaes) == sorted(processor.vqvaes)
    with pytest.raises(ValueError, match=r"no processor_config.json; not a saved FourMProcessor"):
        FourMProcessor.from_pretrained(tmp_path / "vqvae" / "tok_rgb")


def test_saved_code_is_the_import_closure(processor, tmp_path):
    """save_pretrained writes the processor's module and every package module it imports, no more."""
    from fourm_hf.remote_code import flat_name, remote_code_closure

    processor.save_pretrained(tmp_path)
    closure = remote_code_closure("processing/processing_fourm.py")
    assert closure[-1] == "processing/processing_fourm.py"
    assert {"text/tokenization_fourm.py", "tokenizers/vqvae.py", "processing/image_processing_fourm.py"} <= set(closure)
    assert sorted(path.name for path in tmp_path.glob("*.py")) == sorted(flat_name(module) for module in closure)


def _run_in_fresh_process(folder, tokens_file, remote: bool):
    header = "import sys; sys.modules['fourm_hf'] = None\n" if remote else "import fourm_hf\n"
    code = header + (
        "import json, numpy as np, torch\n"
        "from transformers import AutoProcessor\n"
        f"p = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        f"inputs = torch.load({str(tokens_file)!r}, weights_only=False)\n"
        "out = p(**inputs)\n"
        "print(type(p).__module__)\n"
        "print(json.dumps({k: v.tolist() for k, v in out.items()}))\n"
    )
    environment = {**subprocess_env(), "HF_MODULES_CACHE": str(folder / "modules")}
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    return lines[-2], json.loads(lines[-1])


def _check_fresh_process(processor, tokens, scenes, tmp_path, remote):
    processor.save_pretrained(tmp_path)
    torch.save(all_inputs(scenes), tmp_path / "inputs.pt")
    module, outputs = _run_in_fresh_process(tmp_path, tmp_path / "inputs.pt", remote)
    assert ("transformers_modules" in module) == remote, module
    assert sorted(outputs) == sorted(tokens)
    for name, values in outputs.items():
        if name == "pixel_values":
            np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), tokens[name].numpy())
        else:
            assert values == tokens[name].tolist(), name


def test_fresh_process_loads_the_same_processor(processor, tokens, scenes, tmp_path):
    _check_fresh_process(processor, tokens, scenes, tmp_path, remote=False)


@pytest.mark.slow
def test_trust_remote_code_without_the_package(processor, tokens, scenes, tmp_path):
    _check_fresh_process(processor, tokens, scenes, tmp_path, remote=True)


# ---- bad input ------------------------------------------------------------------------------------------
def _bad_inputs(scene):
    rgb, depth, semseg = scene["rgb"], scene["depth"], scene["semseg"]
    nan_depth = depth.copy()
    nan_depth[3, 4] = np.nan
    bad_semseg = semseg.astype(np.int64)
    bad_semseg[0, 0] = len(SCENE_CLASSES)
    return {
        "two channels": (dict(images=np.zeros((SCENE_SIZE, SCENE_SIZE, 2), np.uint8)), r"images\[0\].*C in \{1, 3, 4\}"),
        "depth channels": (dict(depth=np.ones((SCENE_SIZE, SCENE_SIZE, 2), np.float32)), r"depth\[0\].*shape"),
        "size mismatch": (dict(images=rgb, depth=np.ones((40, 40), np.float32)), r"different sizes"),
        "nan depth": (dict(depth=nan_depth), r"depth\[0\].*NaN"),
        "semseg id": (dict(semseg=bad_semseg), r"semseg\[0\].*class id 6"),
        "box outside": (dict(images=rgb, boxes=[{"label": "red cube", "box": [0.1, 0.2, 1.3, 0.4]}]), r"boxes\[0\]\[0\].*outside \[0, 1\]"),
        "xmin > xmax": (dict(images=rgb, boxes=[{"label": "red cube", "box": [0.5, 0.2, 0.3, 0.4]}]), r"xmin > xmax"),
        "boxes alone outside": (dict(boxes=[{"label": "red cube", "box": [-0.1, 0.2, 0.3, 0.4]}]), r"det\[0\].*outside \[0, 1\]"),
        "empty text": (dict(text="   "), r"caption: text is empty"),
        "batch mismatch": (dict(depth=[depth, depth], text=["a cube"]), r"batch sizes"),
        "nothing": (dict(), r"give at least one"),
        "batch and single": (dict(depth=[depth], text="a cube"), r"batches \(lists\) and some single"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs(render_scene(0, SCENE_SIZE))))
def test_bad_input_raises_value_error(processor, scenes, case):
    kwargs, pattern = _bad_inputs(scenes[0])[case]
    with pytest.raises(ValueError, match=pattern):
        processor(**kwargs)


def test_missing_vqvae_and_bad_decode_inputs(processor, scenes):
    no_normal = FourMProcessor(processor.image_processor, processor.tokenizer,
                               vqvaes={"tok_depth": processor.vqvaes["tok_depth"]})
    with pytest.raises(ValueError, match=r"normal: no VQ-VAE is loaded for the 'normal' map"):
        no_normal(normal=scenes[0]["normal"])
    with pytest.raises(ValueError, match=r"no decoder for \['tok_normal'\]"):
        no_normal.decode({"tok_normal": torch.zeros(1, GRID * GRID, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"tok_depth: ids must have shape \(B, 16\)"):
        processor.decode({"tok_depth": torch.zeros(1, 15, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"tok_depth.*ids must lie in \[0, 256\)"):
        processor.decode({"tok_depth": torch.full((1, GRID * GRID), 256)})
    with pytest.raises(ValueError, match=r"box_scores\[0\]"):
        det = processor(boxes=[{"label": "red cube", "box": [0.1, 0.2, 0.3, 0.4]}])
        processor.decode(det, box_scores=[[0.1, 0.2]])


def test_mismatched_components_are_rejected(processor):
    small = FourMVQVAE(FourMVQVAEConfig(input_kind="depth", image_size=16, patch_size=8, vocab_size=256,
                                        base_channels=8, max_channels=16))
    with pytest.raises(ValueError, match=r"vqvaes\['tok_depth'\]: reads 16x16 maps.*image_size=32"):
        FourMProcessor(processor.image_processor, processor.tokenizer, vqvaes={"tok_depth": small})
    with pytest.raises(ValueError, match=r"vqvaes\['depth'\].*produces modality 'tok_depth'"):
        FourMProcessor(processor.image_processor, processor.tokenizer, vqvaes={"depth": processor.vqvaes["tok_depth"]})
    wrong_classes = tiny_vqvae("semseg")
    wrong_classes.config.num_classes = 9
    with pytest.raises(ValueError, match=r"num_classes=9.*num_semseg_classes=6"):
        FourMProcessor(processor.image_processor, processor.tokenizer, vqvaes={"tok_semseg": wrong_classes})


# ---- assembling a processor from trained parts ------------------------------------------------------------
def test_assemble_processor_command(processor, scenes, tmp_path, capsys):
    from fourm_hf.cli import main as cli_main

    processor.tokenizer.save_pretrained(tmp_path / "text")
    folders = []
    for name, vqvae in processor.vqvaes.items():
        vqvae.save_pretrained(tmp_path / name)
        folders.append(str(tmp_path / name))
    out = tmp_path / "processor"
    assert cli_main(["assemble-processor", "--text-tokenizer", str(tmp_path / "text"), "--vqvae", *folders,
                     "--out", str(out), "--max-text-length", "128"]) == 0
    assembled = AutoProcessor.from_pretrained(out)
    expected, got = processor(**all_inputs(scenes)), assembled(**all_inputs(scenes))
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # an expected error is one line on stderr and exit status 2 (cli.run_command)
    assert cli_main(["assemble-processor", "--text-tokenizer", str(tmp_path / "text"), "--vqvae", *folders,
                     "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
