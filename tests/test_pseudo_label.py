"""Pseudo-labeling: tiny randomly initialised models of the real classes, saved to a temporary folder
and run through the real transformers pipelines (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from fourm_hf.data import pseudo_label as pl

SIZE = 32
SEG_CLASSES = ["sky", "floor", "sphere", "cube", "cone"]
DET_CLASSES = ["cat", "dog", "car"]


def _processor(name: str, **kwargs):
    """The PIL image processor when transformers has one (no torchvision here), else the default class."""
    import transformers

    return getattr(transformers, f"{name}Pil", getattr(transformers, name))(**kwargs)


CAPTION_WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "the", "on"]


def _tiny_tokenizer(words=CAPTION_WORDS):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return BertTokenizer(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def build_tiny_models(root, det_classes=DET_CLASSES, caption_words=CAPTION_WORDS) -> dict:
    """Save tiny random DPT, SegFormer, YOLOS, CLIP vision, BLIP and BERT models under ``root``; returns name -> folder.

    ``det_classes`` name YOLOS's labels, ``caption_words`` are BLIP's vocabulary (besides its special tokens)."""
    import transformers as T

    torch.manual_seed(0)
    paths = {}

    def save(name, model, processor):
        path = os.path.join(root, name)
        model.eval().save_pretrained(path)
        processor.save_pretrained(path)
        paths[name] = path

    dpt = T.DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8,
        backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=16,
        reassemble_factors=[1, 1, 1, 0.5], head_in_index=-1,  # larger factors make conv2d slow on CPU
    )
    save("depth", T.DPTForDepthEstimation(dpt), _processor("DPTImageProcessor", size={"height": 32, "width": 32}))
    segformer = T.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2],
        num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=len(SEG_CLASSES),
        id2label=dict(enumerate(SEG_CLASSES)), label2id={n: i for i, n in enumerate(SEG_CLASSES)},
    )
    save("segmentation", T.SegformerForSemanticSegmentation(segformer), _processor("SegformerImageProcessor", size={"height": 32, "width": 32}))
    yolos = T.YolosConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=[32, 32], patch_size=8,
        num_detection_tokens=5, num_labels=len(det_classes), id2label=dict(enumerate(det_classes)),
        label2id={n: i for i, n in enumerate(det_classes)},
    )
    save("detection", T.YolosForObjectDetection(yolos), _processor("YolosImageProcessor", size={"shortest_edge": 32, "longest_edge": 32}))
    clip = T.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    save("features", T.CLIPVisionModel(clip), _processor("CLIPImageProcessor", size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    tokenizer = _tiny_tokenizer(caption_words)
    blip = T.BlipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=64, bos_token_id=2, sep_token_id=3, eos_token_id=3, pad_token_id=0, encoder_hidden_size=32),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=32,
    )
    captioner = T.BlipForConditionalGeneration(blip)
    captioner.generation_config.eos_token_id = 3  # [SEP] ends a caption, as in real BLIP checkpoints
    with torch.no_grad():  # favour words over special tokens so that random captions are not empty
        captioner.text_decoder.cls.predictions.bias[[0, 1, 2, 4]] -= 10.0
        captioner.text_decoder.cls.predictions.bias[5:] += 2.0
    save("caption", captioner, T.BlipProcessor(image_processor=_processor("BlipImageProcessor", size={"height": 32, "width": 32}), tokenizer=tokenizer))
    bert = T.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    save("text", T.BertModel(bert), tokenizer)
    return paths


def write_images(folder, count: int = 4, seed: int = 0) -> list[str]:
    """``count`` smooth random RGB PNGs of assorted sizes in ``folder``; returns their names."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    names = []
    for i in range(count):
        height, width = [(40, 48), (32, 64), (48, 40), (36, 36)][i % 4]
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        names.append(f"img_{i:02d}.png")
        image.save(os.path.join(folder, names[-1]))
    return names


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_tiny_models(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def labellers(models):
    return pl.build_labellers(
        depth_model=models["depth"], segmentation_model=models["segmentation"], detection_model=models["detection"],
        feature_model=models["features"], caption_model=models["caption"], batch_size=2, detection_threshold=0.0,
        caption_max_new_tokens=5, field_of_view_degrees=60.0,
    )


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder)
    return str(folder)


def _assert_same_dataset(a, b):
    assert a.column_names == b.column_names and len(a) == len(b)
    assert a.features == b.features
    for row_a, row_b in zip(a, b):
        for key in a.column_names:
            if key == "rgb":
                np.testing.assert_array_equal(np.asarray(row_a[key]), np.asarray(row_b[key]))
            elif isinstance(row_a[key], (list, np.ndarray)) and key != "boxes":
                np.testing.assert_array_equal(np.asarray(row_a[key]), np.asarray(row_b[key]), err_msg=key)
            else:
                assert row_a[key] == row_b[key], key


# ------------------------------------------------------------------------------------------------
# Image conversion, depth scaling, normals
# ------------------------------------------------------------------------------------------------


def test_to_rgb_conversions_are_explicit():
    gray = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, mode="L")
    rgb = np.asarray(pl.to_rgb(gray))
    assert rgb.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], np.asarray(gray))

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (200, 0, 0, 0)  # fully transparent -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half transparent black over white -> mid gray
    rgba[1, 1] = (0, 255, 0, 255)
    out = np.asarray(pl.to_rgb(Image.fromarray(rgba, mode="RGBA")))
    np.testing.assert_array_equal(out[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    assert np.all(np.abs(out[1, 0].astype(int) - 127) <= 1)
    np.testing.assert_array_equal(out[1, 1], (0, 255, 0))

    sixteen = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    assert sixteen.mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(pl.to_rgb(sixteen))[0, :, 0], (0, 100, 255))

    with pytest.raises(pl.UnreadableImageError, match="unsupported image mode 'F'"):
        pl.to_rgb(Image.fromarray(np.zeros((2, 2), dtype=np.float32), mode="F"))


def test_resize_and_center_crop():
    array = np.zeros((32, 64, 3), dtype=np.uint8)
    array[:, :, 0] = np.arange(64)[None, :]
    cropped = np.asarray(pl.resize_and_center_crop(Image.fromarray(array), 32))
    np.testing.assert_array_equal(cropped, array[:, 16:48])  # no resize needed: a pure centre crop
    tall = pl.resize_and_center_crop(Image.new("RGB", (50, 100)), 32)
    assert tall.size == (32, 32)


def test_depth_from_inverse_depth():
    inverse = np.array([[2.0, 1.0], [0.5, -1.0]])
    np.testing.assert_allclose(pl.depth_from_inverse_depth(inverse), [[0.5, 1.0], [2.0, pl.MAX_RELATIVE_DEPTH]])
    assert pl.depth_from_inverse_depth(np.array([[1.0, 1e-9]]))[0, 1] == pl.MAX_RELATIVE_DEPTH  # clipped
    np.testing.assert_array_equal(pl.depth_from_inverse_depth(np.zeros((2, 2))), pl.MAX_RELATIVE_DEPTH)
    with pytest.raises(ValueError, match="finite"):
        pl.depth_from_inverse_depth(np.array([[np.nan, 1.0]]))


def test_normals_from_depth_of_a_tilted_plane_are_exact():
    fov, height, width = 70.0, 24, 32
    focal = (width / 2) / np.tan(np.radians(fov) / 2)
    u = (np.arange(width) + 0.5 - width / 2) / focal
    v = (np.arange(height) + 0.5 - height / 2) / focal
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)
    plane_normal = np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8])
    depth = -4.0 / (rays @ plane_normal)  # points P = depth * ray with plane_normal . P = -4
    assert np.all(depth > 0)
    normals = pl.normals_from_depth(depth, fov)
    np.testing.assert_allclose(normals, np.broadcast_to(plane_normal, normals.shape), atol=1e-5)
    # a wrong field of view bends the plane: the estimate must then differ
    assert np.abs(pl.normals_from_depth(depth, 30.0) - plane_normal).max() > 0.05
    with pytest.raises(ValueError, match="field_of_view"):
        pl.normals_from_depth(depth, 180.0)


def test_normals_from_depth_agree_with_rendered_scene_normals():
    from fourm_hf.data.scenes import FIELD_OF_VIEW_DEGREES, SCENE_CLASSES, render_scene

    for seed in (0, 1):
        scene = render_scene(seed, 64)
        estimated = pl.normals_from_depth(scene["depth"], FIELD_OF_VIEW_DEGREES)
        floor = scene["semseg"] == SCENE_CLASSES.index("floor")
        interior = floor.copy()
        for axis in (0, 1):
            for shift in (-1, 1):
                interior &= np.roll(floor, shift, axis=axis)
        interior[[0, -1], :] = interior[:, [0, -1]] = False
        cosine = np.sum(estimated[interior] * scene["normal"][interior], axis=-1)
        assert interior.sum() > 100 and np.median(cosine) > 0.9995, (seed, np.median(cosine))


# ------------------------------------------------------------------------------------------------
# Labellers against direct model calls
# ------------------------------------------------------------------------------------------------


def _images(count=3):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(count)]


def test_labellers_match_direct_model_calls(models, labellers):
    import transformers as T

    images = _images()
    by_type = {type(labeller).__name__: labeller for labeller in labellers}
    labels = {}
    for labeller in labellers:
        labels.update(labeller.label(images, labels))

    depth_model = T.DPTForDepthEstimation.from_pretrained(models["depth"]).eval()
    depth_processor = T.AutoImageProcessor.from_pretrained(models["depth"])
    with torch.no_grad():
        predicted = depth_model(**depth_processor(images=images, return_tensors="pt")).predicted_depth
    resized = depth_processor.post_process_depth_estimation(type("O", (), {"predicted_depth": predicted})(), target_sizes=[(SIZE, SIZE)] * 3)
    for i in range(3):
        expected = pl.depth_from_inverse_depth(resized[i]["predicted_depth"].numpy())
        np.testing.assert_allclose(labels["depth"][i], expected, rtol=1e-4, atol=1e-5)
        assert labels["depth"][i].dtype == np.float32 and labels["depth"][i].shape == (SIZE, SIZE)
        np.testing.assert_allclose(labels["normal"][i], pl.normals_from_depth(labels["depth"][i], 60.0))
    assert by_type["DepthLabeller"].depth_kind == "relative-inverse"

    seg_model = T.SegformerForSemanticSegmentation.from_pretrained(models["segmentation"]).eval()
    seg_processor = T.AutoImageProcessor.from_pretrained(models["segmentation"])
    with torch.no_grad():
        outputs = seg_model(**seg_processor(images=images, return_tensors="pt"))
    expected = seg_processor.post_process_semantic_segmentation(outputs, target_sizes=[(SIZE, SIZE)] * 3)
    for i in range(3):
        np.testing.assert_array_equal(labels["semseg"][i], expected[i].numpy().astype(np.uint8))
    assert by_type["SegmentationLabeller"].metadata()["semseg_classes"] == SEG_CLASSES

    det_model = T.YolosForObjectDetection.from_pretrained(models["detection"]).eval()
    det_processor = T.AutoImageProcessor.from_pretrained(models["detection"])
    for i, image in enumerate(images):
        with torch.no_grad():
            outputs = det_model(**det_processor(images=[image], return_tensors="pt"))
        result = det_processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(SIZE, SIZE)])[0]
        order = np.argsort(-result["scores"].numpy(), kind="stable")
        assert len(labels["boxes"][i]) == len(order) == 5
        expected_boxes = sorted(
            [(-float(result["scores"][k]), DET_CLASSES[int(result["labels"][k])], tuple(int(c) for c in result["boxes"][k].int())) for k in order]
        )
        for box, (_, label, pixels) in zip(labels["boxes"][i], expected_boxes):
            assert box["label"] == label
            np.testing.assert_allclose(box["box"], np.clip(np.array(pixels) / SIZE, 0, 1))

    clip = T.CLIPVisionModel.from_pretrained(models["features"]).eval()
    clip_processor = T.AutoImageProcessor.from_pretrained(models["features"])
    with torch.no_grad():
        hidden = clip(**clip_processor(images=images, return_tensors="pt")).last_hidden_state
    for i in range(3):
        assert labels["clip"][i].dtype == np.float16 and labels["clip"][i].shape == (4, 4, 32)
        np.testing.assert_allclose(labels["clip"][i].astype(np.float32), hidden[i, 1:].reshape(4, 4, 32).numpy(), rtol=1e-2, atol=2e-3)

    blip = T.BlipForConditionalGeneration.from_pretrained(models["caption"]).eval()
    blip_processor = T.AutoProcessor.from_pretrained(models["caption"])
    for i, image in enumerate(images):
        with torch.no_grad():
            ids = blip.generate(**blip_processor(images=image, text="", return_tensors="pt"), max_new_tokens=5, do_sample=False)
        assert labels["caption"][i] == blip_processor.decode(ids[0], skip_special_tokens=True).strip()
    assert all(caption.split() for caption in labels["caption"]), labels["caption"]  # real words, not empty strings


def test_metric_depth_is_stored_as_predicted(models):
    images = _images(2)
    metric = pl.DepthLabeller(models["depth"], depth_kind="metric")
    stored = metric.label(images, {})["depth"]
    predicted = metric.pipeline(images, batch_size=metric.batch_size)
    for i in range(2):
        np.testing.assert_array_equal(stored[i], predicted[i]["predicted_depth"].numpy())
    assert metric.metadata()["depth_kind"] == "metric"
    with pytest.raises(ValueError, match="depth_kind must be"):
        pl.DepthLabeller(models["depth"], depth_kind="disparity")


def test_feature_labeller_uses_the_vision_tower_of_a_full_clip_model(tmp_path):
    import transformers as T

    config = T.CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, bos_token_id=0, eos_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = T.CLIPModel(config).eval()
    model.save_pretrained(tmp_path)
    _processor("CLIPImageProcessor", size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    labeller = pl.FeatureLabeller(str(tmp_path), dtype="float32")
    images = _images(2)
    maps = labeller.label(images, {})["clip"]
    pixel_values = T.AutoImageProcessor.from_pretrained(tmp_path)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state
    np.testing.assert_allclose(np.stack(maps), hidden[:, 1:].reshape(2, 4, 4, 32).numpy(), rtol=1e-5, atol=1e-6)


def test_detection_threshold_filters(models):
    strict = pl.DetectionLabeller(models["detection"], threshold=1.0)
    assert strict.label(_images(2), {})["boxes"] == [[], []]


def test_wrong_task_models_raise_clear_errors(models):
    with pytest.raises(ValueError, match=r"depth: model .*segmentation.* SegformerForSemanticSegmentation.*'depth-estimation'"):
        pl.DepthLabeller(models["segmentation"])
    with pytest.raises(ValueError, match=r"semseg: model .*detection.*'image-segmentation'"):
        pl.SegmentationLabeller(models["detection"])
    with pytest.raises(ValueError, match=r"boxes: model .*features.*CLIPVisionModel.*'object-detection'"):
        pl.DetectionLabeller(models["features"])
    with pytest.raises(ValueError, match=r"caption: model .*depth.*DPTForDepthEstimation.*'image-text-to-text'"):
        pl.CaptionLabeller(models["depth"])
    with pytest.raises(ValueError, match=r"clip: model .*text.* is a BertModel, not a vision model"):
        pl.FeatureLabeller(models["text"])
    with pytest.raises(ValueError, match=r"depth: cannot load model .*does-not-exist"):
        pl.DepthLabeller(os.path.join(os.path.dirname(models["depth"]), "does-not-exist"))
    with pytest.raises(ValueError, match="no labeller given"):
        pl.build_labellers()


# ------------------------------------------------------------------------------------------------
# Datasets: schema, resume, multi-process, bad input
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(labellers, image_dir, tmp_path_factory):
    """All labellers over ``image_dir`` in one uninterrupted run (shards of 4): (dataset, out folder)."""
    out = tmp_path_factory.mktemp("labelled") / "out"
    return pl.pseudo_label_dataset(image_dir, out, labellers, size=SIZE, batch_size=2, shard_size=4), out


def test_folder_to_dataset_schema_and_metadata(labellers, labelled, image_dir):
    from datasets import Array2D, Array3D, Image as ImageFeature

    dataset, out = labelled
    assert len(dataset) == 4
    assert dataset["source"] == [f"img_{i:02d}.png" for i in range(4)]
    assert isinstance(dataset.features["rgb"], ImageFeature)
    assert dataset.features["depth"] == Array2D((SIZE, SIZE), "float32")
    assert dataset.features["normal"] == Array3D((SIZE, SIZE, 3), "float32")
    assert dataset.features["semseg"] == Array2D((SIZE, SIZE), "uint8")
    assert dataset.features["clip"] == Array3D((4, 4, 32), "float16")
    row = dataset.with_format("numpy")[0]
    original = pl.resize_and_center_crop(Image.open(os.path.join(image_dir, "img_00.png")).convert("RGB"), SIZE)
    np.testing.assert_array_equal(np.asarray(dataset[0]["rgb"]), np.asarray(original))
    assert np.all(row["depth"] > 0) and np.all(row["depth"] <= pl.MAX_RELATIVE_DEPTH)
    np.testing.assert_allclose(np.linalg.norm(row["normal"], axis=-1), 1.0, atol=1e-5)
    assert set(np.unique(row["semseg"])) <= set(range(len(SEG_CLASSES)))
    assert all(b["label"] in DET_CLASSES and len(b["box"]) == 4 for b in dataset[0]["boxes"])
    metadata = pl.load_metadata(out)
    assert metadata["labellers"]["semseg"]["semseg_classes"] == SEG_CLASSES
    assert metadata["labellers"]["depth"]["depth_kind"] == "relative-inverse"
    assert json.loads(dataset.info.description)["fourm_hf_pseudo_label"]["normal"]["field_of_view_degrees"] == 60.0
    assert (out / "skipped.jsonl").read_text() == ""
    assert not out.with_name("out.shards").exists()
    # a rerun with the same arguments returns the finished dataset
    again = pl.pseudo_label_dataset(image_dir, out, labellers, size=SIZE, batch_size=2, shard_size=4)
    assert len(again) == 4


def test_interrupted_run_resumes_to_the_same_dataset(labellers, labelled, image_dir, tmp_path):
    # shards of 2 here, of 4 in the reference: the same batches of 2, so the same values
    kwargs = dict(size=SIZE, batch_size=2, shard_size=2)
    reference = labelled[0]
    with pytest.raises(KeyboardInterrupt):
        pl.pseudo_label_dataset(image_dir, tmp_path / "out", labellers, _stop_after_shards=1, **kwargs)
    shards = tmp_path / "out.shards"
    assert sorted(p.name for p in shards.iterdir() if p.is_dir()) == ["shard-00000-of-00002"]
    (shards / "shard-00001-of-00002.tmp-99999").mkdir()  # debris of a process killed while saving
    with pytest.raises(ValueError, match=r"unfinished run with different \['batch_size'\]"):
        pl.pseudo_label_dataset(image_dir, tmp_path / "out", labellers, size=SIZE, batch_size=1, shard_size=2)
    resumed = pl.pseudo_label_dataset(image_dir, tmp_path / "out", labellers, **kwargs)
    _assert_same_dataset(resumed, reference)


_KILL_PREAMBLE = """
import os, signal, sys
import torch
from fourm_hf.data import pseudo_label as pl
images, out, threads, size = sys.argv[1:5]
torch.set_num_threads(int(threads))  # as in the parent: float reductions then agree bit for bit
real_replace, calls = os.replace, []
def replace_then_die(src, dst):
    calls.append(dst)
    if len(calls) == 3:  # 1: params file, 2: shard 0; the 2nd shard is saved to its temp folder, not renamed
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace_then_die
"""


def label_until_killed(labellers_code: str, images, out, size: int) -> None:
    """Run ``pseudo_label_dataset`` (2 images per shard) with the labellers ``labellers_code`` builds, in a child
    process that is SIGKILLed while it saves its second shard; check it left shard 0 and the debris of shard 1."""
    from conftest import subprocess_env

    script = _KILL_PREAMBLE + (f"labellers = {labellers_code}\n"
                               "pl.pseudo_label_dataset(images, out, labellers, size=int(size), batch_size=2, shard_size=2)\n")
    result = subprocess.run([sys.executable, "-c", script, str(images), str(out), str(torch.get_num_threads()), str(size)],
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    names = sorted(p.name for p in Path(f"{out}.shards").iterdir() if p.is_dir())
    assert names[0] == "shard-00000-of-00002" and names[1].startswith("shard-00001-of-00002.tmp-"), names
    assert not Path(out).exists()


def test_killed_process_resumes_to_the_same_dataset(models, image_dir, tmp_path):
    out = tmp_path / "out"
    label_until_killed(f"pl.build_labellers(depth_model={models['depth']!r}, batch_size=2)", image_dir, out, SIZE)

    labellers = pl.build_labellers(depth_model=models["depth"], batch_size=2)
    resumed = pl.pseudo_label_dataset(image_dir, out, labellers, size=SIZE, batch_size=2, shard_size=2)
    reference = pl.pseudo_label_dataset(image_dir, tmp_path / "ref", labellers, size=SIZE, batch_size=2, shard_size=2)
    _assert_same_dataset(resumed, reference)
    assert resumed["source"] == [f"img_{i:02d}.png" for i in range(4)]


def test_multi_process_split_then_merge_equals_single_run(models, image_dir, tmp_path):
    labellers = pl.build_labellers(depth_model=models["depth"], batch_size=2, normals=False)
    kwargs = dict(size=SIZE, batch_size=2, shard_size=2)
    assert pl.pseudo_label_dataset(image_dir, tmp_path / "out", labellers, num_processes=2, process_index=1, **kwargs) is None
    assert sorted(p.name for p in (tmp_path / "out.shards").iterdir() if p.is_dir()) == ["shard-00001-of-00002"]
    with pytest.raises(ValueError, match="1 of 2 shards are not done yet"):
        pl.merge_shards(tmp_path / "out")
    pl.pseudo_label_dataset(image_dir, tmp_path / "out", labellers, num_processes=2, process_index=0, **kwargs)
    merged = pl.merge_shards(tmp_path / "out")
    _assert_same_dataset(merged, pl.pseudo_label_dataset(image_dir, tmp_path / "ref", labellers, **kwargs))
    with pytest.raises(ValueError, match="process_index must be < num_processes"):
        pl.pseudo_label_dataset(image_dir, tmp_path / "x", labellers, num_processes=2, process_index=2, **kwargs)


def test_bad_images_are_skipped_and_reported(models, tmp_path):
    folder = tmp_path / "images"
    write_images(folder, count=2)
    (folder / "corrupt.jpg").write_bytes(b"this is not an image at all")
    good = (folder / "img_00.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.full((40, 40), 77, dtype=np.uint8), mode="L").save(folder / "gray.png")
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :20, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    (folder / "notes.txt").write_text("not an image file name: ignored")

    labellers = pl.build_labellers(depth_model=models["depth"], batch_size=2)
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 images"):
        dataset = pl.pseudo_label_dataset(folder, tmp_path / "out", labellers, size=SIZE, batch_size=2, shard_size=1)
    assert dataset["source"] == ["gray.png", "img_00.png", "img_01.png", "rgba.png"]
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [s["source"] for s in skipped] == ["corrupt.jpg", "truncated.png"]
    assert "cannot identify image file" in skipped[0]["error"] and "truncated" in skipped[1]["error"]
    np.testing.assert_array_equal(np.asarray(dataset[0]["rgb"]), np.full((SIZE, SIZE, 3), 77, dtype=np.uint8))
    rgba_row = np.asarray(dataset[3]["rgb"])
    np.testing.assert_array_equal(rgba_row[:, 0], np.broadcast_to((255, 0, 0), (SIZE, 3)))
    np.testing.assert_array_equal(rgba_row[:, -1], np.broadcast_to((255, 255, 255), (SIZE, 3)))


def test_empty_or_missing_inputs_raise(models, tmp_path):
    labellers = pl.build_labellers(depth_model=models["depth"], normals=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no image files"):
        pl.pseudo_label_dataset(tmp_path / "empty", tmp_path / "out", labellers)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="contains no image files"):
        pl.pseudo_label_dataset(tmp_path / "texts", tmp_path / "out", labellers)
    with pytest.raises(ValueError, match="is not a directory"):
        pl.pseudo_label_dataset(tmp_path / "missing", tmp_path / "out", labellers)
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"junk")
    (folder / "bad2.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 2 images could be read"):
        pl.pseudo_label_dataset(tmp_path / "one", tmp_path / "out", labellers, size=SIZE)


def test_scene_dataset_input_keeps_its_columns(models, tmp_path):
    from fourm_hf.data.scenes import make_scene_dataset

    scenes = make_scene_dataset(num=3, size=32, out_dir=tmp_path / "scenes", shard_size=3)
    labellers = pl.build_labellers(depth_model=models["depth"], batch_size=2)
    with pytest.raises(ValueError, match="already has a column 'depth'.*--replace-existing"):
        pl.pseudo_label_dataset(tmp_path / "scenes", tmp_path / "out", labellers, size=SIZE)
    dataset = pl.pseudo_label_dataset(tmp_path / "scenes", tmp_path / "out", labellers, size=SIZE, replace_existing=True)
    assert dataset["source"] == ["0", "1", "2"] and dataset["seed"] == scenes["seed"] and dataset["caption"] == scenes["caption"]
    np.testing.assert_array_equal(np.asarray(dataset[1]["rgb"]), np.asarray(scenes[1]["rgb"]))
    assert not np.allclose(np.asarray(dataset[0]["depth"]), np.asarray(scenes[0]["depth"]))  # replaced by the model's
    np.testing.assert_array_equal(np.asarray(dataset[2]["semseg"]), np.asarray(scenes[2]["semseg"]))  # kept


def test_cli(models, image_dir, tmp_path, capsys):
    from fourm_hf.cli import main

    code = main(["pseudo-label", "--images", image_dir, "--out", str(tmp_path / "out"), "--depth-model", models["depth"],
                 "--detection-model", models["detection"], "--size", "32", "--batch-size", "3", "--shard-size", "4"])
    assert code == 0
    assert "wrote 4 labelled images" in capsys.readouterr().out
    code = main(["pseudo-label", "--images", image_dir, "--out", str(tmp_path / "bad"), "--depth-model", models["detection"]])
    assert code == 2 and "'depth-estimation'" in capsys.readouterr().err
