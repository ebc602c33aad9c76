"""pipeline("any-to-any") on a tiny random 4M model and processor saved in one folder: outputs,
seeds, batching, guidance, the PNG grid, bad input, and the parent pipeline for other models."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForMultimodalLM, pipeline
from transformers.pipelines import SUPPORTED_TASKS
from transformers.pipelines.any_to_any import AnyToAnyPipeline

import fourm_hf
from fourm_hf import (FourMAnyToAnyPipeline, FourMImageProcessor, FourMModel, FourMProcessor, FourMTokenizerModel,
                      ReleasedModalityTokenizer, save_grid, train_text_tokenizer)
from fourm_hf.data.scenes import SCENE_CLASSES, render_scene
from fourm_hf.modeling.generation import build_generation_schedule, generate
from fourm_hf.pipelines.grid import LINE_HEIGHT, MARGIN, grid_size, make_grid
from fourm_hf.testing_utils import tiny_config, tiny_vqvae

from conftest import SHARED_DIR

SIZE = 32
TEXT_LENGTH = 8  # caption / det max_length: short sequences keep the tests fast
FAST = {"num_steps": 2}  # two MaskGIT steps per image target
IMAGE_TARGETS = ("depth", "normal", "semseg")


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(seed, 48) for seed in range(2)]


@pytest.fixture(scope="module")
def parts(scenes):
    labels = sorted({box["label"] for scene in scenes for box in scene["boxes"]})
    tokenizer = train_text_tokenizer([s["caption"] for s in scenes], vocab_size=40, class_names=labels,
                                     num_sentinels=8, coord_bins=8)
    specs = dict(tiny_config().modality_specs)
    for name in ("caption", "det"):
        specs[name] = {**specs[name], "vocab_size": len(tokenizer), "max_length": TEXT_LENGTH}
    for name in ("tok_rgb", "tok_depth", "tok_normal", "tok_semseg"):
        specs[name] = {**specs[name], "vocab_size": 256}  # the smallest VQ-VAE codebook
    config = tiny_config(modality_specs=specs)
    torch.manual_seed(0)
    model = FourMModel(config).eval()
    vqvaes = {f"tok_{kind}": tiny_vqvae(kind, image_size=SIZE, seed=seed)
              for seed, kind in enumerate(("rgb", "depth", "normal", "semseg"))}
    processor = FourMProcessor(FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES)), tokenizer,
                               vqvaes=vqvaes, max_text_length=TEXT_LENGTH)
    return model, processor


@pytest.fixture(scope="module")
def folder(parts, tmp_path_factory):
    model, processor = parts
    path = tmp_path_factory.mktemp("fourm_pipeline")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(parts):
    model, processor = parts
    return pipeline("any-to-any", model=model, processor=processor)


@pytest.fixture(scope="module")
def default_output(pipe, scenes):
    return pipe(scenes[0]["rgb"], seed=0, return_tokens=True, **FAST)


# ---- construction ---------------------------------------------------------------------------------------
def test_pipeline_from_folder_equals_pipeline_from_objects(pipe, folder, scenes):
    from_folder = pipeline("any-to-any", model=str(folder))
    assert type(from_folder) is FourMAnyToAnyPipeline and type(pipe) is FourMAnyToAnyPipeline
    assert isinstance(from_folder.processor, FourMProcessor) and isinstance(from_folder.model, FourMModel)
    assert sorted(from_folder.processor.vqvaes) == ["tok_depth", "tok_normal", "tok_rgb", "tok_semseg"]
    image = Image.fromarray(scenes[1]["rgb"])
    a = from_folder(image, target_modalities=["depth"], seed=3, return_tokens=True, **FAST)
    b = pipe(image, target_modalities=["depth"], seed=3, return_tokens=True, **FAST)
    np.testing.assert_array_equal(a["tokens"]["tok_depth"], b["tokens"]["tok_depth"])
    np.testing.assert_array_equal(a["depth"]["array"], b["depth"]["array"])


def test_the_package_exports_the_pipeline_and_the_sampler():
    assert fourm_hf.FourMAnyToAnyPipeline is FourMAnyToAnyPipeline
    assert fourm_hf.generate is generate and fourm_hf.build_generation_schedule is build_generation_schedule
    assert callable(fourm_hf.save_grid)


# ---- outputs --------------------------------------------------------------------------------------------
def test_image_gives_every_default_target(default_output, parts):
    model, processor = parts
    out = default_output
    # rgb is the input, so it is no default target; tok_clip is not a pipeline modality
    assert list(out) == ["depth", "normal", "semseg", "caption", "det", "tokens"]
    for name in IMAGE_TARGETS:
        assert isinstance(out[name]["image"], Image.Image)
        assert out[name]["image"].mode == "RGB" and out[name]["image"].size == (SIZE, SIZE)
    depth, normal, semseg = out["depth"]["array"], out["normal"]["array"], out["semseg"]["array"]
    assert depth.shape == (SIZE, SIZE) and depth.dtype == np.float32 and np.isfinite(depth).all() and depth.min() >= 0
    assert normal.shape == (SIZE, SIZE, 3) and normal.dtype == np.float32 and np.abs(normal).max() <= 1 + 1e-5
    assert semseg.shape == (SIZE, SIZE) and semseg.dtype == np.int64
    assert 0 <= semseg.min() and semseg.max() < len(SCENE_CLASSES)
    assert isinstance(out["caption"], str)
    assert isinstance(out["det"]["boxes"], list) and isinstance(out["det"]["image"], Image.Image)
    # the arrays are the processor's decoding of the returned tokens
    tokens = out["tokens"]
    assert set(tokens) == {"tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "caption", "det"}
    assert all(ids.dtype == np.int64 for ids in tokens.values())
    np.testing.assert_array_equal(processor.decode_image_tokens("tok_semseg", tokens["tok_semseg"])["array"][0], semseg)
    assert processor.tokenizer.decode_text(tokens["caption"]) == out["caption"]
    assert len(tokens["caption"]) <= TEXT_LENGTH and 0 not in tokens["caption"]


def test_tok_names_and_a_single_string_target_are_accepted(pipe, scenes, default_output):
    out = pipe({"tok_rgb": scenes[0]["rgb"]}, target_modalities="tok_depth", seed=0, **FAST)
    assert list(out) == ["depth"]
    assert out["depth"]["array"].shape == (SIZE, SIZE)


def test_text_to_rgb(pipe):
    out = pipe(text="a green cube.", target_modalities=["rgb"], seed=0, **FAST)
    assert list(out) == ["rgb"]
    array = out["rgb"]["array"]
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(out["rgb"]["image"]), array)


def test_boxes_come_back_with_labels_scores_and_a_drawing(pipe, scenes):
    """Postprocessing of det tokens (a random model rarely writes well-formed boxes itself)."""
    boxes = [{"label": "green cube", "box": [0.25, 0.5, 0.5, 0.75]}]
    ids = pipe.processor.encode_box_lists([boxes])
    background = Image.new("RGB", (SIZE, SIZE), (10, 20, 30))
    probs = torch.linspace(0.2, 0.9, ids.shape[1])[None]
    [result] = pipe.postprocess({"tokens": {"det": ids}, "targets": ["det"], "backgrounds": [background],
                                 "token_probs": {"det": probs}})
    [box] = result["det"]["boxes"]
    assert box["label"] == "green cube"
    assert box["score"] == pytest.approx(float(probs[0, :-1].mean()))  # the box's tokens, not its [EOS]
    assert box["box"] == pytest.approx([0.25, 0.5, 0.5, 0.75], abs=1 / 7)  # 8 coordinate bins
    drawn = np.asarray(result["det"]["image"])
    assert drawn.shape == (SIZE, SIZE, 3) and (drawn != (10, 20, 30)).any()
    # tokens decoded without the probabilities they were generated with: no score rather than a made-up one
    [result] = pipe.postprocess({"tokens": {"det": ids}, "targets": ["det"], "backgrounds": [background]})
    assert result["det"]["boxes"][0]["score"] is None


def test_box_scores_average_the_probabilities_of_each_box_tokens(pipe):
    from fourm_hf.text.box_scores import box_scores, box_token_spans, scored_boxes

    tokenizer = pipe.processor.tokenizer
    first, second = tokenizer.class_names[:2]
    boxes = [{"label": first, "box": [0.0, 0.0, 0.5, 0.5]}, {"label": second, "box": [0.5, 0.5, 1.0, 1.0]}]
    first_ids, second_ids = ([i for i in pipe.processor.encode_box_lists([[box]])[0].tolist()
                              if i not in (tokenizer.eos_token_id, tokenizer.pad_token_id)] for box in boxes)
    malformed = [tokenizer.coordinate_token_id(0, 1), tokenizer.coordinate_token_id(2, 1)]  # v0 then v2: skipped
    row = first_ids + malformed + second_ids + [tokenizer.eos_token_id]
    row += [tokenizer.pad_token_id] * (24 - len(row))
    spans = box_token_spans(tokenizer, row)
    assert len(spans) == 2 and len(tokenizer.decode_boxes(row)) == 2
    probs = [float("nan")] * len(row)  # nothing outside the boxes is read: padding stays NaN
    for (start, end), value in zip(spans, (0.9, 0.3)):
        probs[start:end] = [value] * (end - start)
    probs[spans[0][1]:spans[1][0]] = [0.01] * (spans[1][0] - spans[0][1])  # the malformed group
    probs[row.index(tokenizer.eos_token_id)] = 0.05
    assert box_scores(tokenizer, row, probs) == pytest.approx([0.9, 0.3])
    kept = [index for index, i in enumerate(row) if i != tokenizer.eos_token_id]  # the ml4m stop rule stores no [EOS]
    assert box_scores(tokenizer, [row[i] for i in kept], [probs[i] for i in kept]) == pytest.approx([0.9, 0.3])
    # what decoding uses: the same boxes and scores, each box's tokens decoded once
    decoded, scores = scored_boxes(tokenizer, row, probs)
    assert decoded == tokenizer.decode_boxes(row) and scores == pytest.approx([0.9, 0.3])
    with pytest.raises(ValueError, match="have no probability"):
        scored_boxes(tokenizer, row, [float("nan")] * len(row))
    with pytest.raises(ValueError, match="det: 24 token ids but 23 token probabilities"):
        box_scores(tokenizer, row[:24], probs[:23])
    given = list(probs)
    given[spans[1][0]] = float("nan")
    with pytest.raises(ValueError, match="have no probability"):
        box_scores(tokenizer, row, given)


# ---- guidance, seeds, batching, progress ----------------------------------------------------------------
def test_dict_input_with_guidance_matches_the_sampler(pipe, scenes):
    scene = scenes[0]
    sample = {"semseg": scene["semseg"], "caption": "a small green cube."}
    guidance = {"semseg": 2.0, "caption": -1.0}
    out = pipe(sample, target_modalities=["rgb"], guidance=guidance, seed=5, return_tokens=True, **FAST)
    assert list(out) == ["rgb", "tokens"]
    # the same run through the sampler directly
    processed = pipe.processor(semseg=[scene["semseg"]], text=[sample["caption"]])
    schedule = build_generation_schedule(
        pipe.model.config, ["tok_semseg", "caption"], ["tok_rgb"], guidance=[(("tok_semseg",), 2.0), (("caption",), -1.0)],
        decoding_steps=2, temps=2.0, temp_schedules="linear")
    expected = generate(pipe.model, dict(processed), schedule, torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(out["tokens"]["tok_rgb"], expected["tok_rgb"][0].numpy())
    unguided = pipe(sample, target_modalities=["rgb"], seed=5, return_tokens=True, **FAST)
    assert not np.array_equal(unguided["tokens"]["tok_rgb"], out["tokens"]["tok_rgb"])


def test_same_seed_same_output_other_seed_other_output(pipe, scenes, default_output):
    image = scenes[0]["rgb"]
    options = dict(target_modalities=["depth"], return_tokens=True, **FAST)
    seeded = pipe(image, seed=0, **options)
    # depth is decoded first in the default run too, from the same first random numbers
    np.testing.assert_array_equal(seeded["tokens"]["tok_depth"], default_output["tokens"]["tok_depth"])
    np.testing.assert_array_equal(seeded["depth"]["array"], default_output["depth"]["array"])
    generator = pipe(image, generator=torch.Generator().manual_seed(0), **options)
    np.testing.assert_array_equal(generator["tokens"]["tok_depth"], seeded["tokens"]["tok_depth"])
    other = pipe(image, seed=1, **options)
    assert not np.array_equal(other["tokens"]["tok_depth"], seeded["tokens"]["tok_depth"])


def test_a_batch_equals_one_sample_at_a_time(pipe, scenes):
    """Greedy decoding: the batch size must not change anything (padding, packing, splitting)."""
    images = [scenes[0]["rgb"], scenes[1]["rgb"]]
    options = dict(target_modalities=["depth", "caption"], greedy=True, return_tokens=True, **FAST)
    batched = pipe(images, batch_size=2, **options)
    assert isinstance(batched, list) and len(batched) == 2
    for image, result in zip(images, batched):
        alone = pipe(image, **options)
        for name in ("tok_depth", "caption"):
            np.testing.assert_array_equal(result["tokens"][name], alone["tokens"][name])
        assert result["caption"] == alone["caption"]
    assert not np.array_equal(batched[0]["tokens"]["tok_depth"], batched[1]["tokens"]["tok_depth"])


def test_samples_with_different_inputs_keep_their_order(pipe, scenes):
    scene = scenes[1]
    options = dict(target_modalities=["depth"], greedy=True, return_tokens=True, **FAST)
    mixed = pipe([{"semseg": scene["semseg"]}, scene["rgb"], {"semseg": scene["semseg"]}], batch_size=2, **options)
    from_rgb = pipe(scene["rgb"], **options)
    from_semseg = pipe({"semseg": scene["semseg"]}, **options)
    np.testing.assert_array_equal(mixed[1]["tokens"]["tok_depth"], from_rgb["tokens"]["tok_depth"])
    for index in (0, 2):
        np.testing.assert_array_equal(mixed[index]["tokens"]["tok_depth"], from_semseg["tokens"]["tok_depth"])
        assert "tok_rgb" not in mixed[index]["tokens"]


def test_classifier_free_guidance_changes_the_output(pipe, scenes):
    options = dict(target_modalities=["depth"], seed=2, return_tokens=True, **FAST)
    plain, guided = pipe(scenes[0]["rgb"], **options), pipe(scenes[0]["rgb"], cfg_scale=3.0, **options)
    assert not np.array_equal(plain["tokens"]["tok_depth"], guided["tokens"]["tok_depth"])


def test_progress_bar(pipe, scenes, capsys):
    pipe(scenes[0]["rgb"], target_modalities=["depth"], seed=0, progress=True, **FAST)
    assert "generating" in capsys.readouterr().err
    pipe(scenes[0]["rgb"], target_modalities=["depth"], seed=0, **FAST)
    assert "generating" not in capsys.readouterr().err


def test_decoding_defaults_live_in_one_dict():
    from fourm_hf.modeling.generation import presets
    from fourm_hf.pipelines.any_to_any import DEFAULT_DECODING

    assert DEFAULT_DECODING is presets.DEFAULT_DECODING  # one source, beside the presets

    assert DEFAULT_DECODING["image"]["scheme"] == "maskgit" and DEFAULT_DECODING["image"]["num_steps"] == 8
    assert DEFAULT_DECODING["image"]["token_schedule"] == "cosine"
    assert DEFAULT_DECODING["sequence"]["scheme"] == "autoregressive"


# ---- the grid -------------------------------------------------------------------------------------------
def test_save_grid_writes_one_labelled_png(default_output, scenes, tmp_path):
    path = save_grid(scenes[0]["rgb"], default_output, tmp_path / "grid.png")
    grid = Image.open(path)
    tile = 128  # outputs are 32 px; tiles are at least 128
    tiles = 1 + 4  # input rgb + depth, normal, semseg, det (the caption goes under the row)
    width, height_without_text = grid_size(tiles, tile)
    assert grid.format == "PNG" and grid.width == width
    assert (grid.height - height_without_text - MARGIN) % LINE_HEIGHT == 0 and grid.height > height_without_text
    # the second tile is the depth image, enlarged
    left, top = MARGIN + (tile + MARGIN), MARGIN + 14
    crop = np.asarray(grid.convert("RGB").crop((left, top, left + tile, top + tile)))
    expected = np.asarray(default_output["depth"]["image"].resize((tile, tile), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(crop, expected)
    assert not list(tmp_path.glob(".*.tmp"))


def test_grid_draws_boxes_at_tile_resolution_on_the_input(scenes):
    from fourm_hf.processing.visualization import draw_boxes

    boxes = [{"label": "red cube", "score": 1.0, "box": [0.25, 0.25, 0.75, 0.75]}]
    small = draw_boxes(Image.fromarray(scenes[0]["rgb"]), boxes)  # what the pipeline returns: model resolution
    grid = make_grid(scenes[0]["rgb"], {"det": {"boxes": boxes, "image": small}}, tile_size=192)
    left, top = MARGIN + (192 + MARGIN), MARGIN + 14
    tile = np.asarray(grid.crop((left, top, left + 192, top + 192)))
    expected = draw_boxes(Image.fromarray(scenes[0]["rgb"]).resize((192, 192), Image.BICUBIC), boxes)
    np.testing.assert_array_equal(tile, np.asarray(expected))


def _colours_in(image: Image.Image) -> set:
    return {tuple(int(c) for c in pixel) for pixel in np.asarray(image.convert("RGB")).reshape(-1, 3)}


def test_grid_shows_a_legend_of_the_segmentation_classes_present():
    from fourm_hf.processing.visualization import colorize_semseg, semseg_palette

    semseg = np.zeros((32, 32), np.int64)
    semseg[:, 16:] = 3  # sky and cube present; floor, sphere, cylinder, cone absent
    tile = Image.fromarray(colorize_semseg(semseg, len(SCENE_CLASSES)))
    outputs = {"semseg": {"array": semseg, "image": tile}}
    grid = make_grid(np.zeros((32, 32, 3), np.uint8), outputs, tile_size=128, class_names=SCENE_CLASSES)
    band_top = MARGIN + 14 + 128 + MARGIN
    assert grid.height == grid_size(2, 128, 1)[1]  # one legend row, no text
    band = grid.crop((0, band_top, grid.width, grid.height))
    palette = [tuple(int(c) for c in colour) for colour in semseg_palette(len(SCENE_CLASSES))]
    shown = _colours_in(band)
    assert palette[0] in shown and palette[3] in shown
    assert not {palette[2], palette[4], palette[5]} & shown  # (floor's grey also appears in anti-aliased text)
    without_legend = make_grid(np.zeros((32, 32, 3), np.uint8), {"depth": {"image": tile}}, tile_size=128)
    assert without_legend.height == grid_size(2, 128)[1]
    # the input segmentation counts too; names default to the class id
    grid = make_grid({"rgb": np.zeros((32, 32, 3), np.uint8), "semseg": np.full((32, 32), 5)}, outputs, tile_size=128)
    assert palette[5] in _colours_in(grid.crop((0, band_top, grid.width, grid.height)))
    with pytest.raises(ValueError, match="class_names: expected a list of class-name strings"):
        make_grid(np.zeros((32, 32, 3), np.uint8), outputs, class_names="sky floor")


# ---- bad input ------------------------------------------------------------------------------------------
def _bad_calls(scenes):
    image, scene = scenes[0]["rgb"], scenes[0]
    return {
        "unknown target": (lambda p: p(image, target_modalities=["height"]), "unknown modality 'height'"),
        "unknown input": (lambda p: p({"rgb": image, "heat": image}), "unknown modality 'heat'"),
        "target is input": (lambda p: p(image, target_modalities=["rgb"]), "both an input and a target"),
        "two-channel array": (lambda p: p(np.zeros((8, 8, 2), np.uint8)), "expected (H, W, 3)"),
        "empty array": (lambda p: p(np.zeros((0, 0, 3), np.uint8)), "H, W >= 1"),
        "empty prompt": (lambda p: p(text="  ", target_modalities=["rgb"]), "prompt is empty"),
        "guidance not given": (lambda p: p({"rgb": image, "semseg": scene["semseg"]}, target_modalities=["depth"],
                                           guidance={"caption": -1.0}), "not among the given inputs"),
        "no inputs": (lambda p: p(), "No inputs"),
        "empty dict": (lambda p: p({}), "No inputs"),
        "missing file": (lambda p: p("/no/such/image.png"), "no image file"),
        "steps for a caption": (lambda p: p(image, target_modalities=["caption"], num_steps={"caption": 3}), "num_steps"),
    }


@pytest.mark.parametrize("case", list(_bad_calls([render_scene(0, 48)])))
def test_bad_input_is_a_clear_value_error(pipe, scenes, case):
    call, message = _bad_calls(scenes)[case]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(pipe)


def test_unknown_call_argument_is_a_type_error(pipe, scenes):
    with pytest.raises(TypeError, match="max_new_tokens"):
        pipe(scenes[0]["rgb"], max_new_tokens=3)


def test_mismatched_processor_is_rejected(parts):
    model, processor = parts
    other = FourMProcessor(FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES)), processor.tokenizer,
                           vqvaes={"tok_depth": tiny_vqvae("depth", image_size=SIZE, vocab_size=512)})
    with pytest.raises(ValueError, match="512 codes"):
        FourMAnyToAnyPipeline(model=model, processor=other)
    with pytest.raises(ValueError, match="FourMProcessor"):
        FourMAnyToAnyPipeline(model=model, processor=processor.tokenizer)


# ---- other models keep transformers' pipeline -----------------------------------------------------------
def test_other_models_get_the_parent_pipeline_unchanged():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from transformers.processing_utils import ProcessorMixin

    class TextProcessor(ProcessorMixin):
        attributes = ["tokenizer"]

        def __init__(self, tokenizer):
            super().__init__(tokenizer)

    words = ["[PAD]", "[UNK]", "hello", "world", "red", "cube"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[PAD]")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_embd=16, n_layer=1, n_head=2, n_positions=16,
                                      bos_token_id=0, eos_token_id=0)).eval()
    processor = TextProcessor(tokenizer)
    pipe = pipeline("any-to-any", model=gpt2, processor=processor, device="cpu")
    assert type(pipe) is AnyToAnyPipeline
    reference = AnyToAnyPipeline(model=gpt2, processor=processor, device="cpu", task="any-to-any")
    assert pipe("hello world", max_new_tokens=3) == reference("hello world", max_new_tokens=3)
    # the task entry keeps the parent's model classes and default model; only the implementation is ours
    entry = SUPPORTED_TASKS["any-to-any"]
    assert entry["impl"] is FourMAnyToAnyPipeline and entry["pt"] == (AutoModelForMultimodalLM,)
    assert entry["default"]["model"]["pt"][0] == "google/gemma-3n-E4B-it" and entry["type"] == "multimodal"


def test_the_task_model_class_loads_a_4m_folder(folder):
    assert type(AutoModelForMultimodalLM.from_pretrained(folder)) is FourMModel


# ---- devices and decoding presets ------------------------------------------------------------------------
@pytest.mark.parametrize("placement", [{"device": "cpu"}, {"device": -1}, {"device_map": "cpu"}])
def test_pipeline_honours_device_and_device_map_like_transformers(folder, scenes, default_output, placement):
    placed = pipeline("any-to-any", model=str(folder), **placement)
    assert placed.device == torch.device("cpu") and placed.model.device == torch.device("cpu")
    out = placed(scenes[0]["rgb"], seed=0, return_tokens=True, **FAST)
    for name, ids in default_output["tokens"].items():
        assert np.array_equal(out["tokens"][name], ids), name


def test_a_checkpoint_naming_a_generation_preset_decodes_with_its_recipes(parts, scenes):
    from fourm_hf.modeling.generation import build_preset_schedule

    model, processor = parts
    preset_model = FourMModel(copy.deepcopy(model.config)).eval()  # its own config: the preset must not leak into `parts`
    preset_model.load_state_dict(model.state_dict())
    preset_model.config.generation_preset = "ml4m_demo"
    preset_pipe = pipeline("any-to-any", model=preset_model, processor=processor)
    batch = preset_pipe.preprocess([{"rgb": Image.fromarray(scenes[0]["rgb"])}], target_modalities=["depth", "caption"])
    depth, caption = batch["schedule"].targets
    assert (depth.scheme, depth.num_steps, depth.temperatures, depth.reveal_rule) == ("roar", 1, (0.01,), "ml4m")
    assert depth.guidance_weights == ((2.0,),) and caption.temperatures[0] == 0.3 and caption.sequence_start == "sentinel"
    expected = build_preset_schedule(preset_model.config, "ml4m_demo", batch["schedule"].cond_domains, ["tok_depth", "caption"])
    assert batch["schedule"] == expected
    greedy = preset_pipe.preprocess([{"rgb": Image.fromarray(scenes[0]["rgb"])}], target_modalities=["depth"], greedy=True,
                                    num_steps=2)
    assert greedy["schedule"].targets[0].greedy and greedy["schedule"].targets[0].num_steps == 2
    out = preset_pipe(scenes[0]["rgb"], target_modalities=["depth", "caption"], seed=0)
    assert out["depth"]["array"].shape == (SIZE, SIZE) and isinstance(out["caption"], str)
    with pytest.raises(ValueError, match="unknown generation preset"):
        preset_model.config.generation_preset = "no_such_preset"
        preset_pipe.preprocess([{"rgb": Image.fromarray(scenes[0]["rgb"])}], target_modalities=["depth"])


# ---- diffusion (DiVAE) decoding steps: a released fixture tokenizer behind the pipeline ------------------
DIVAE_FIXTURE_DIR = SHARED_DIR / "fixtures" / "ml4m" / "tokenizers"
DIVAE_SIZE = 64  # 4x4 codes of the patch-16 DiVAE


def _divae_fixture_folders() -> list:
    """Fixture tokenizer folders whose config names a UNet decoder (a DiVAE), found by content."""
    if not DIVAE_FIXTURE_DIR.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{DIVAE_FIXTURE_DIR} is not available "
                                                                  "(../shared exists on developer machines and in CI only)"))]
    folders = [path for path in sorted(DIVAE_FIXTURE_DIR.iterdir()) if (path / "config.json").is_file()
               and json.loads((path / "config.json").read_text()).get("dec_type", "").startswith("unet")]
    if not folders:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no DiVAE tokenizer folder in {DIVAE_FIXTURE_DIR}"))]
    return [pytest.param(path, id=path.name) for path in folders]


def _load_fixture_tokenizer(folder):
    """``FourMTokenizerModel`` on the folder, with ViT head counts from ``<name>.json`` where the preset name lacks them."""
    config = json.loads((folder / "config.json").read_text())
    meta_file = folder / f"{folder.name}.json"
    presets = json.loads(meta_file.read_text()).get("fixture_presets", {}) if meta_file.is_file() else {}
    overrides = {}
    for key, side in (("enc_type", "encoder"), ("dec_type", "decoder")):
        name = config.get(key, "")
        if name.startswith("vit") and "num_heads" in presets.get(name, {}) and not re.search(r"_h\d+_", name):
            overrides[f"{side}_num_heads"] = presets[name]["num_heads"]
    return FourMTokenizerModel.from_pretrained(folder, **overrides)


@pytest.fixture(scope="module", params=_divae_fixture_folders())
def divae_pipe(request, parts):
    _, processor = parts
    divae = _load_fixture_tokenizer(request.param)
    specs = dict(tiny_config().modality_specs)
    specs["tok_rgb"] = {**specs["tok_rgb"], "vocab_size": divae.config.codebook_size}
    for name in ("caption", "det"):
        specs[name] = {**specs[name], "vocab_size": len(processor.tokenizer), "max_length": TEXT_LENGTH}
    torch.manual_seed(0)
    model = FourMModel(tiny_config(modality_specs=specs, image_size=DIVAE_SIZE, patch_size=16)).eval()
    released = ReleasedModalityTokenizer(divae, "tok_rgb", image_size=DIVAE_SIZE, num_diffusion_steps=4)
    divae_processor = FourMProcessor(FourMImageProcessor(image_size=DIVAE_SIZE, num_semseg_classes=len(SCENE_CLASSES)),
                                     processor.tokenizer, vqvaes={"tok_rgb": released}, max_text_length=TEXT_LENGTH)
    return pipeline("any-to-any", model=model, processor=divae_processor)


def _unet_calls(pipe, **options) -> tuple[int, np.ndarray]:
    """Run caption -> rgb; return how often the DiVAE's UNet ran and the decoded RGB."""
    calls = []
    unet = pipe.processor.vqvaes["tok_rgb"].tokenizer.decoder
    handle = unet.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        out = pipe(text="a green cube.", target_modalities=["rgb"], **FAST, **options)
    finally:
        handle.remove()
    return len(calls), out["rgb"]["array"]


def test_num_diffusion_steps_reaches_the_divae_decoder(divae_pipe):
    # steps that divide 1000: the reference's trailing DDIM spacing then calls the UNet exactly that often
    calls_2, two = _unet_calls(divae_pipe, num_diffusion_steps=2, seed=0)
    calls_5, five = _unet_calls(divae_pipe, num_diffusion_steps=5, seed=0)
    calls_default, _ = _unet_calls(divae_pipe, seed=0)
    assert (calls_2, calls_5, calls_default) == (2, 5, 4)  # default: the tokenizer's own num_diffusion_steps=4
    assert two.shape == (DIVAE_SIZE, DIVAE_SIZE, 3) and two.dtype == np.uint8
    assert not np.array_equal(two, five)
    # the call's seed / generator also draws the diffusion noise: same seed, same image; another seed, another image
    _, again = _unet_calls(divae_pipe, num_diffusion_steps=2, seed=0)
    _, from_generator = _unet_calls(divae_pipe, num_diffusion_steps=2, generator=torch.Generator().manual_seed(0))
    _, other_seed = _unet_calls(divae_pipe, num_diffusion_steps=2, seed=1)
    assert np.array_equal(two, again) and np.array_equal(two, from_generator) and not np.array_equal(two, other_seed)
    # the generated tokens are decoded with exactly the generator stream that sampled them
    generator = torch.Generator().manual_seed(7)
    out = divae_pipe(text="a green cube.", target_modalities=["rgb"], generator=generator, num_diffusion_steps=2,
                     return_tokens=True, **FAST)
    expected = divae_pipe.processor.decode({"tok_rgb": torch.as_tensor(out["tokens"]["tok_rgb"])[None]},
                                           num_diffusion_steps=2, generator=_replayed(divae_pipe, 7))
    np.testing.assert_array_equal(out["rgb"]["array"], expected["tok_rgb"]["array"][0])


def _replayed(pipe, seed: int) -> torch.Generator:
    """A generator seeded like the pipeline's, advanced past the token sampling of the same call."""
    generator = torch.Generator().manual_seed(seed)
    inputs = pipe.preprocess([{"caption": "a green cube."}], target_modalities=["rgb"], **FAST)
    pipe.forward(inputs, generator=generator)
    return generator


@pytest.mark.parametrize("steps", [0, -3, 2.5, "4", True])
def test_bad_num_diffusion_steps_is_a_clear_error(pipe, steps):
    with pytest.raises(ValueError, match=r"num_diffusion_steps must be an integer >= 1.*got"):
        pipe(text="a green cube.", target_modalities=["rgb"], num_diffusion_steps=steps, **FAST)


# ---- negative prompts --------------------------------------------------------------------------------------
def test_negative_prompt_matches_the_sampler_with_a_negative_caption_condition(pipe, scenes):
    scene = scenes[0]
    options = dict(target_modalities=["rgb"], seed=5, return_tokens=True, **FAST)
    out = pipe({"semseg": scene["semseg"]}, text="a green cube.", negative_prompt="a white cone.", cfg_scale=2.0,
               negative_scale=1.5, **options)
    # the same run through the sampler: u + 2 (c - u) - 1.5 (c_neg - u), c_neg seeing only the negative caption
    processed = pipe.processor(semseg=[scene["semseg"]], text=["a green cube."])
    schedule = build_generation_schedule(
        pipe.model.config, ["tok_semseg", "caption"], ["tok_rgb"],
        guidance=[(("tok_semseg", "caption"), 2.0), (("caption#negative",), -1.5)], decoding_steps=2, temps=2.0,
        temp_schedules="linear")
    expected = generate(pipe.model, dict(processed), schedule, torch.Generator().manual_seed(5),
                        variant_tokens={"caption#negative": pipe.processor.encode_texts(["a white cone."])})
    np.testing.assert_array_equal(out["tokens"]["tok_rgb"], expected["tok_rgb"][0].numpy())
    plain = pipe({"semseg": scene["semseg"]}, text="a green cube.", cfg_scale=2.0, **options)
    assert not np.array_equal(plain["tokens"]["tok_rgb"], out["tokens"]["tok_rgb"])
    # the schedule the pipeline planned: the negative caption is a second condition with a negative weight
    batch = pipe.preprocess([{"caption": "a green cube.", "negative_prompt": "a white cone."}], target_modalities=["rgb"])
    plan = batch["schedule"].targets[0]
    assert plan.guidance_conditions == (("caption",), ("caption#negative",)) and plan.guidance_weights[0] == (1.0, -1.0)
    assert torch.equal(batch["variant_tokens"]["caption#negative"], pipe.processor.encode_texts(["a white cone."]))


def test_empty_negative_prompt_adds_no_negative_term(pipe):
    options = dict(target_modalities=["rgb"], seed=3, return_tokens=True, **FAST)
    plain = pipe(text="a green cube.", **options)["tokens"]["tok_rgb"]
    for negative in ("", "   ", None):
        np.testing.assert_array_equal(pipe(text="a green cube.", negative_prompt=negative, **options)["tokens"]["tok_rgb"], plain)
    np.testing.assert_array_equal(
        pipe(text="a green cube.", negative_prompt="a white cone.", negative_scale=0, **options)["tokens"]["tok_rgb"], plain)
    batch = pipe.preprocess([{"caption": "a green cube."}], target_modalities=["rgb"])
    assert batch["schedule"].targets[0].guidance_conditions == () and batch["variant_tokens"] == {}
    assert not np.array_equal(pipe(text="a green cube.", negative_prompt="a white cone.", **options)["tokens"]["tok_rgb"], plain)


def test_negative_prompts_per_sample_keep_their_order(pipe):
    texts, negatives = ["a green cube.", "a white cone.", "a green cube."], ["a white cone.", "", "a cyan cylinder."]
    options = dict(target_modalities=["rgb"], greedy=True, return_tokens=True, **FAST)
    together = pipe(text=texts, negative_prompt=negatives, batch_size=3, **options)
    for text, negative, out in zip(texts, negatives, together):
        alone = pipe(text=text, negative_prompt=negative, **options)
        np.testing.assert_array_equal(out["tokens"]["tok_rgb"], alone["tokens"]["tok_rgb"])


@pytest.mark.parametrize("call, message", [
    (dict(negative_prompt="a white cone.", target_modalities=["caption"]), "caption is a target"),
    (dict(negative_prompt=["a", "b"], target_modalities=["rgb"]), "2 prompts for 1 samples"),
    (dict(negative_prompt=3, target_modalities=["rgb"]), "must be a str"),
    (dict(negative_prompt="a white cone.", negative_scale=-1.0, target_modalities=["rgb"]), "negative_scale must be a finite number >= 0"),
    (dict(negative_prompt="a white cone.", negative_scale="2", target_modalities=["rgb"]), "negative_scale must be"),
    (dict(negative_prompt="a white cone.", guidance={"depth": 2.0}, cfg_scale=2.0, target_modalities=["rgb"]), "not both"),
])
def test_bad_negative_prompts_are_clear_errors(pipe, scenes, call, message):
    with pytest.raises(ValueError, match=message):
        pipe({"depth": scenes[0]["depth"]}, **call, **FAST)


def test_grid_draws_a_given_edge_map_as_a_grey_tile():
    from fourm_hf.pipelines.grid import _input_tile

    edges = np.zeros((16, 16), dtype=np.float32)
    edges[4, :] = 1.0
    tile = np.asarray(_input_tile("sam_edge", edges, None))
    assert tile.shape == (16, 16, 3) and tile[4].min() == 255 and tile[0].max() == 0
    with pytest.raises(ValueError, match="cannot draw modality 'tok_clip'"):
        _input_tile("tok_clip", edges, None)


# ---- one encoding, one decoding, only what was asked for ------------------------------------------------
@pytest.fixture
def calls(pipe, monkeypatch):
    """Counts of the processor's encode and decode entry points during a pipeline call: the real methods,
    wrapped with a counter (their behaviour is unchanged)."""
    counts = {}

    def counting(owner, name, key=None):
        original = getattr(owner, name)
        key = key or name

        def wrapper(*args, **kwargs):
            counts[key] = counts.get(key, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    # __call__ is looked up on the class (the pipeline calls self.processor(...)); the others on the instance
    counting(FourMProcessor, "__call__", "encode")
    for name in ("decode", "decode_image_tokens", "decode_pixel_values", "encode_texts"):
        counting(pipe.processor, name)
    counting(pipe.processor.tokenizer, "decode_boxes")
    decode_boxes = pipe.processor.tokenizer.decode_boxes  # the counting wrapper: also record what it reads
    counts_ids = counts.setdefault("box_token_ids", [])

    def recording(ids, *args, **kwargs):
        counts_ids.extend(int(i) for i in ids)
        return decode_boxes(ids, *args, **kwargs)

    monkeypatch.setattr(pipe.processor.tokenizer, "decode_boxes", recording)
    return counts


def test_a_call_encodes_once_and_decodes_only_its_targets(pipe, scenes, calls):
    pipe([scenes[0]["rgb"], scenes[1]["rgb"]], target_modalities=["depth"], batch_size=2, seed=0, **FAST)
    # one batch: one encoding, one decoding of the one target, no box or input-image decoding
    assert calls == {"encode": 1, "decode": 1, "decode_image_tokens": 1, "box_token_ids": []}


def test_boxes_are_decoded_once_and_drawn_on_the_decoded_input_image(pipe, scenes, calls):
    out = pipe([scenes[0]["rgb"], scenes[1]["rgb"]], target_modalities=["det"], batch_size=2, seed=0,
               return_tokens=True, **FAST)
    # the input image decoded once, as the boxes' background; no det token decoded twice
    read = calls.pop("box_token_ids")
    calls.pop("decode_boxes", None)
    assert calls == {"encode": 1, "decode": 1, "decode_pixel_values": 1}
    generated = [int(i) for result in out for i in result["tokens"]["det"]]
    assert len(read) <= len(generated) and not set(read) - set(generated)
    assert all(0 < box["score"] <= 1 for result in out for box in result["det"]["boxes"])
    assert out[0]["det"]["image"].size == (SIZE, SIZE)


def test_text_to_rgb_and_boxes_draws_on_the_generated_rgb_without_decoding_it_twice(pipe, calls):
    out = pipe(text="a green cube.", target_modalities=["rgb", "det"], seed=0, return_tokens=True, **FAST)
    assert len(calls.pop("box_token_ids")) <= len(out["tokens"]["det"])  # no det token decoded twice
    calls.pop("decode_boxes", None)
    # the caption's ids come from the processor's text encoder, inside the one encoding
    assert calls == {"encode": 1, "encode_texts": 1, "decode": 1, "decode_image_tokens": 1}
    if not out["det"]["boxes"]:  # with no box drawn, the background is the generated RGB itself
        np.testing.assert_array_equal(np.asarray(out["det"]["image"]), out["rgb"]["array"])


def test_samples_in_two_batches_are_encoded_and_decoded_once_per_batch(pipe, scenes, calls):
    pipe([scenes[0]["rgb"], {"semseg": scenes[0]["semseg"]}], target_modalities=["depth"], batch_size=2, seed=0, **FAST)
    assert calls == {"encode": 2, "decode": 2, "decode_image_tokens": 2, "box_token_ids": []}
    calls.clear()
    pipe(text="a green cube.", negative_prompt="a white cone.", target_modalities=["rgb"], seed=0, **FAST)
    # the negative prompt is a second caption condition: the processor's text encoder runs for the prompt
    # (inside the one encoding) and once for the negative prompt
    assert calls == {"encode": 1, "encode_texts": 2, "decode": 1, "decode_image_tokens": 1}
