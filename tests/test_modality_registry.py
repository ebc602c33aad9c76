"""The modality registry is the one table of modality names: a modality registered with its own
tokenizer is a pipeline input and target end to end, the tables the processor and the pipeline use are
derived from it, and tests leave the registry as they found it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from fourm_hf import FourMImageProcessor, FourMModel, FourMProcessor, ModalitySpec, register_modality, train_text_tokenizer
from fourm_hf.modalities import (get_modality, modalities_for_argument, temporary_modalities, registered_modalities,
                                 registry_order, unregister_modality)
from fourm_hf.modeling.generation import build_generation_schedule, generate
from fourm_hf.pipelines.grid import make_grid, save_grid
from fourm_hf.pipelines.modality_names import ModalityNames
from fourm_hf.processing.processor_inputs import map_arguments, map_keys
from fourm_hf.testing_utils import tiny_config, tiny_vqvae
from fourm_hf.tokenizers.vqvae import FourMVQVAE, FourMVQVAEConfig

SIZE = 32
ALBEDO = ModalitySpec("tok_albedo", "image_tokens", vocab_size=256, num_channels=3, tokenizer="vqvae", target="albedo",
                      public_name="albedo", processor_argument="maps")
FAST = {"num_steps": 2, "greedy": True, "return_tokens": True}


def albedo_vqvae() -> FourMVQVAE:
    """A tiny random VQ-VAE of our own that reads the albedo map as an RGB-like image in [-1, 1]."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        config = FourMVQVAEConfig(input_kind="rgb", target="albedo", modality="tok_albedo", image_size=SIZE, patch_size=8,
                                  vocab_size=256, base_channels=8, max_channels=16)
        return FourMVQVAE(config).eval()


def albedo_map(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)


def build_parts():
    """A tiny 4M model reading and generating ``tok_albedo`` and its processor (call inside ``registered``)."""
    specs = dict(tiny_config().modality_specs)
    for name in ("tok_rgb", "tok_depth"):
        specs[name] = {**specs[name], "vocab_size": 256}
    specs["tok_albedo"] = get_modality("tok_albedo").to_dict()
    config = tiny_config(modality_specs=specs, input_modalities=["rgb", "tok_rgb", "tok_depth", "tok_albedo"],
                         output_modalities=["tok_rgb", "tok_depth", "tok_albedo"])
    torch.manual_seed(0)
    model = FourMModel(config).eval()
    tokenizer = train_text_tokenizer(["a red cube.", "a blue sphere."], vocab_size=40, num_sentinels=8, coord_bins=8)
    vqvaes = {"tok_rgb": tiny_vqvae("rgb", image_size=SIZE, seed=0), "tok_depth": tiny_vqvae("depth", image_size=SIZE, seed=1),
              "tok_albedo": albedo_vqvae()}
    processor = FourMProcessor(FourMImageProcessor(image_size=SIZE), tokenizer, vqvaes=vqvaes, max_text_length=8)
    return model, processor


@pytest.fixture(scope="module")
def albedo_pipe():
    """Built while tok_albedo is registered; used after: the model's config carries the spec and its names."""
    with temporary_modalities(ALBEDO):
        model, processor = build_parts()
    return pipeline("any-to-any", model=model, processor=processor)


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)


# ---- the registry ---------------------------------------------------------------------------------------
def test_registered_restores_the_registry_exactly():
    before = registry_order()
    with temporary_modalities(ALBEDO) as (spec,):
        assert spec is ALBEDO and get_modality("tok_albedo") == ALBEDO
        assert registry_order()[-1] == "tok_albedo" and ALBEDO in modalities_for_argument("maps")
    assert registry_order() == before and "tok_albedo" not in registered_modalities()


def test_registered_restores_the_registry_after_an_error():
    before = registry_order()
    with pytest.raises(RuntimeError, match="inside"):
        with temporary_modalities(ALBEDO):
            raise RuntimeError("inside")
    assert registry_order() == before


def test_unregister_modality_removes_one_and_names_unknown_ones():
    before = registry_order()
    with temporary_modalities():
        register_modality(ALBEDO)
        assert unregister_modality("tok_albedo") == ALBEDO
        assert "tok_albedo" not in registered_modalities()
        with pytest.raises(ValueError, match="Unknown modality 'tok_albedo'"):
            unregister_modality("tok_albedo")
    assert registry_order() == before


def test_specs_carry_their_public_names_and_processor_arguments():
    assert get_modality("tok_depth").public_name == "depth" and get_modality("tok_depth").processor_argument == "depth"
    assert get_modality("tok_rgb").public_name == get_modality("rgb").public_name == "rgb"
    assert get_modality("caption").processor_argument == "text" and get_modality("det").processor_argument == "boxes"
    assert get_modality("tok_clip").processor_argument is None  # computed from the image
    assert get_modality("tok_sam_edge").processor_argument == "edges"
    assert get_modality("tok_dinov2_global").processor_argument == "vectors"
    assert get_modality("tok_rgb@448").public_name == "rgb@448" and get_modality("tok_rgb@448").processor_argument is None
    assert get_modality("metadata").public_name == "metadata" == get_modality("metadata").processor_argument
    # a spec without public_name is named by its name
    assert ModalitySpec("tok_x", "image_tokens", vocab_size=4).public_name == "tok_x"


def test_the_processor_tables_are_derived_from_the_registry():
    assert map_arguments() == {"images": "rgb", "depth": "depth", "normal": "normal", "semseg": "semseg"}
    assert map_keys() == {"rgb": "tokenizer_rgb", "depth": "depth", "normal": "normal", "semseg": "semseg"}
    with temporary_modalities(ModalitySpec("tok_height", "image_tokens", vocab_size=16, target="height", public_name="height",
                                 processor_argument="depth")):
        assert map_arguments()["depth"] == "depth"  # the first registered spec of an argument routes it


@pytest.mark.parametrize("changes, message", [
    ({"public_name": "depth"}, "public_name 'depth' already names the registered modality 'tok_depth'"),
    ({"public_name": "caption"}, "already names the registered modality 'caption'"),
    ({"processor_argument": "albedo"}, "processor_argument must be one of"),
    ({"public_name": "a.b"}, "public_name must be a non-empty string without '.'"),
])
def test_bad_specs_are_named_errors(changes, message):
    before = registry_order()
    with pytest.raises(ValueError, match=message):
        with temporary_modalities(ALBEDO.replace(**changes)):
            pass
    assert registry_order() == before


def test_a_sequence_embedding_takes_no_processor_argument():
    with pytest.raises(ValueError, match="processor_argument must be None"):
        ModalitySpec("t5_x", "sequence_embedding", num_channels=8, max_length=4, processor_argument="text")


# ---- the processor reads a registered modality's own map -------------------------------------------------
def test_the_processor_crops_an_own_map_with_the_shared_crop(albedo_pipe, image):
    processor = albedo_pipe.processor
    albedo = albedo_map(1)
    together = processor(images=[image], maps={"tok_albedo": [albedo]})
    alone = processor(maps={"tok_albedo": [albedo]})
    assert set(together) == {"pixel_values", "tok_rgb", "tok_albedo"} and together["tok_albedo"].shape == (1, 16)
    torch.testing.assert_close(together["tok_albedo"], alone["tok_albedo"])  # both centre crops of a 40x40 map
    # a random crop of the image is applied to the albedo map too: the same as giving it as an RGB image
    crop = {"crop": "random"}
    with_image = processor(images=[image], maps={"tok_albedo": [albedo]}, generator=np.random.default_rng(0), **crop)
    as_image = processor(images=[albedo], generator=np.random.default_rng(0), **crop)
    expected = processor.encode_map("tok_albedo", processor.image_processor(
        images=[albedo], generator=np.random.default_rng(0), **crop)["tokenizer_rgb"])
    torch.testing.assert_close(with_image["tok_albedo"], expected)
    assert as_image["pixel_values"].shape == (1, 3, SIZE, SIZE)


@pytest.mark.parametrize("call, message", [
    (lambda p, image: p(maps={"tok_depth_fine": [image]}), r"maps\['tok_depth_fine'\]: no VQ-VAE that reads a dense map"),
    (lambda p, image: p(images=[image], maps={"tok_albedo": [image[:20]]}), r"maps\['tok_albedo'\]: smaller than"),
    (lambda p, image: p(images=[image[:20, :20]], maps={"tok_albedo": [image]}), r"sizes \[\[40, 40\]\] \(H, W\) differ"),
    (lambda p, image: p(maps=[image]), "maps: expected a dict"),
    (lambda p, image: p(images=[image], maps={"tok_albedo": image}), "some inputs are batches"),
])
def test_bad_maps_are_named_errors(albedo_pipe, image, call, message):
    with pytest.raises(ValueError, match=message):
        call(albedo_pipe.processor, image)


# ---- the pipeline: a registered modality as a target and as an input -------------------------------------
def test_a_registered_modality_is_a_pipeline_target(albedo_pipe, image):
    assert albedo_pipe.available_targets() == ["depth", "rgb", "albedo"]  # the registry's order
    out = albedo_pipe(image, target_modalities=["albedo"], **FAST)
    assert list(out) == ["albedo", "tokens"]
    array = out["albedo"]["array"]
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.uint8
    assert isinstance(out["albedo"]["image"], Image.Image)
    decoded = albedo_pipe.processor.decode_image_tokens("tok_albedo", out["tokens"]["tok_albedo"])
    np.testing.assert_array_equal(decoded["array"][0], array)
    assert list(albedo_pipe(image, **FAST)) == ["depth", "albedo", "tokens"]  # default targets include it
    by_model_name = albedo_pipe(image, target_modalities="tok_albedo", **FAST)
    np.testing.assert_array_equal(by_model_name["tokens"]["tok_albedo"], out["tokens"]["tok_albedo"])


def test_a_registered_modality_is_a_pipeline_input(albedo_pipe, image):
    albedo = albedo_map(2)
    out = albedo_pipe({"rgb": image, "albedo": albedo}, target_modalities=["depth"], **FAST)
    processed = albedo_pipe.processor(images=[image], maps={"tok_albedo": [albedo]})
    pixel_values = processed.pop("pixel_values")
    schedule = build_generation_schedule(albedo_pipe.model.config, ["rgb", "tok_rgb", "tok_albedo"], ["tok_depth"],
                                         decoding_steps=2, greedy=True, temp_schedules="linear", temps=2.0)
    expected = generate(albedo_pipe.model, dict(processed), schedule, torch.Generator().manual_seed(0),
                        pixel_values=pixel_values)
    np.testing.assert_array_equal(out["tokens"]["tok_depth"], expected["tok_depth"][0].numpy())
    np.testing.assert_array_equal(out["tokens"]["tok_albedo"], processed["tok_albedo"][0].numpy())
    # the albedo input changes the sampled depth, and guidance weights address it by its public name
    sampled = {"num_steps": 2, "seed": 0, "return_tokens": True, "target_modalities": ["depth"]}
    first = albedo_pipe({"rgb": image, "albedo": albedo}, **sampled)
    without = albedo_pipe({"rgb": image}, **sampled)
    assert not np.array_equal(without["tokens"]["tok_depth"], first["tokens"]["tok_depth"])
    guided = albedo_pipe({"rgb": image, "albedo": albedo}, guidance={"albedo": 3.0}, **sampled)
    assert not np.array_equal(guided["tokens"]["tok_depth"], first["tokens"]["tok_depth"])
    # alone, as the only input, to every other target
    alone = albedo_pipe({"albedo": albedo}, **FAST)
    assert list(alone) == ["depth", "rgb", "tokens"]


def test_a_saved_model_with_a_registered_modality_loads_where_it_is_not_registered(tmp_path, image):
    with temporary_modalities(ALBEDO):
        model, processor = build_parts()
        model.save_pretrained(tmp_path)
        processor.save_pretrained(tmp_path)
        expected = pipeline("any-to-any", model=model, processor=processor)(image, target_modalities=["albedo"], **FAST)
    assert "tok_albedo" not in registered_modalities()
    loaded = pipeline("any-to-any", model=str(tmp_path))
    assert loaded.available_targets() == ["depth", "rgb", "albedo"]  # unregistered outputs come last
    out = loaded(image, target_modalities=["albedo"], **FAST)
    np.testing.assert_array_equal(out["tokens"]["tok_albedo"], expected["tokens"]["tok_albedo"])


def test_an_unread_input_and_an_undecodable_target_are_named_errors(albedo_pipe, image):
    with pytest.raises(ValueError, match="unknown modality 'height'"):
        albedo_pipe({"rgb": image, "height": image})
    with pytest.raises(ValueError, match="target 'normal': the model does not generate it"):
        albedo_pipe(image, target_modalities=["normal"])
    with pytest.raises(ValueError, match="input 'normal': this model does not read it"):
        albedo_pipe({"rgb": image, "normal": np.zeros((8, 8, 3), np.float32)}, target_modalities=["depth"])
    t5_reader = ModalityNames(tiny_config(input_modalities=["rgb", "t5_caption"], output_modalities=["tok_depth"]), {})
    with pytest.raises(ValueError, match="input 't5_caption': the processor reads no input for it"):
        t5_reader.check_input("t5_caption", "sample 0")
    with pytest.raises(ValueError, match="'clip' is not an input of its own"):
        ModalityNames(tiny_config(), {}).check_input("clip", "sample 0")
    names = ModalityNames(albedo_pipe.model.config, {})  # a processor without the albedo VQ-VAE
    assert "albedo" not in names.targets and "no VQ-VAE to decode tok_albedo" in names.why_not_a_target("albedo")


def test_the_grid_shows_a_registered_modality_given_and_generated(albedo_pipe, image, tmp_path):
    albedo = albedo_map(4)
    out = albedo_pipe({"rgb": image, "albedo": albedo}, target_modalities=["depth"], **FAST)
    path = save_grid({"rgb": image, "albedo": albedo}, out, tmp_path / "inputs.png")
    assert Image.open(path).size[0] > 0
    generated = albedo_pipe(image, target_modalities=["albedo"], **FAST)
    grid = make_grid(image, generated, tile_size=SIZE)
    assert grid.size[0] >= 2 * SIZE  # the input and the generated albedo, side by side
    with pytest.raises(ValueError, match="cannot draw modality 'albedo'"):
        make_grid({"rgb": image, "albedo": albedo.astype(np.float32)}, generated)

