"""Tokenizer placement (processing/tokenizer_placement.py, FourMProcessor.offload_tokenizers) and the
pipeline in bfloat16 with offloaded tokenizers.

The CPU has one device, so the move-and-restore logic is checked with a dtype placement (float32 ->
float64 is an exact round trip); the same code moves tokenizers to an accelerator
(benchmarks/gpu_check.py's offloading section runs it on a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

import fourm_hf  # noqa: F401  (registers the pipeline)
from fourm_hf import FourMImageProcessor, FourMModel, FourMProcessor, train_text_tokenizer
from fourm_hf.data.scenes import SCENE_CLASSES, render_scene
from fourm_hf.processing.tokenizer_placement import module_placement, placed
from fourm_hf.testing_utils import tiny_config, tiny_vqvae

SIZE = 32


def test_placed_moves_for_the_block_and_restores_after_an_error():
    vqvae = tiny_vqvae("depth", image_size=SIZE)
    before = {name: tensor.clone() for name, tensor in vqvae.state_dict().items()}
    with pytest.raises(ValueError, match="ids must"):
        with placed(vqvae, None, torch.float64):
            assert module_placement(vqvae) == (torch.device("cpu"), torch.float64)
            vqvae.decode(torch.full((1, 16), -1))  # bad ids: the tokenizer raises mid-call
    assert module_placement(vqvae) == (torch.device("cpu"), torch.float32)
    for name, tensor in vqvae.state_dict().items():
        assert tensor.dtype == before[name].dtype and torch.equal(tensor, before[name]), name


def test_placed_without_a_target_changes_nothing():
    vqvae = tiny_vqvae("rgb", image_size=SIZE)
    with placed(vqvae, None) as inside:
        assert inside is vqvae and module_placement(vqvae) == (torch.device("cpu"), torch.float32)
    with placed(torch.nn.ReLU(), "cpu", torch.float64) as parameterless:
        assert isinstance(parameterless, torch.nn.ReLU)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    scenes = [render_scene(seed, 48) for seed in range(2)]
    labels = sorted({box["label"] for scene in scenes for box in scene["boxes"]})
    tokenizer = train_text_tokenizer([s["caption"] for s in scenes], vocab_size=40, class_names=labels,
                                     num_sentinels=8, coord_bins=8)
    specs = dict(tiny_config().modality_specs)
    for name in ("caption", "det"):
        specs[name] = {**specs[name], "vocab_size": len(tokenizer), "max_length": 8}
    for name in ("tok_rgb", "tok_depth"):
        specs[name] = {**specs[name], "vocab_size": 256}
    torch.manual_seed(0)
    model = FourMModel(tiny_config(modality_specs=specs)).eval()
    vqvaes = {f"tok_{kind}": tiny_vqvae(kind, image_size=SIZE, seed=seed) for seed, kind in enumerate(("rgb", "depth"))}
    processor = FourMProcessor(FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES)), tokenizer,
                               vqvaes=vqvaes, max_text_length=8)
    path = tmp_path_factory.mktemp("fourm_offload")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, scenes


def test_pipeline_in_bfloat16_with_offloaded_tokenizers(folder):
    path, scenes = folder
    pipe = pipeline("any-to-any", model=str(path), dtype=torch.bfloat16, offload_tokenizers=True)
    assert pipe.model.dtype == torch.bfloat16 and pipe.processor._offload_device == torch.device("cpu")
    reference = pipeline("any-to-any", model=str(path))
    assert reference.processor._offload_device is None  # on the CPU nothing is offloaded by default
    options = dict(target_modalities=["depth", "caption"], seed=0, greedy=True, num_steps=2, return_tokens=True)
    out, expected = pipe(scenes[0]["rgb"], **options), reference(scenes[0]["rgb"], **options)
    assert out["depth"]["array"].shape == expected["depth"]["array"].shape == (SIZE, SIZE)
    share = np.mean(out["tokens"]["tok_depth"] == expected["tokens"]["tok_depth"])
    assert share >= 0.5, f"only {share:.2f} of bf16 greedy depth tokens equal float32's"
    assert {p.dtype for p in pipe.model.parameters()} == {torch.bfloat16}  # generation upcast nothing
    for vqvae in pipe.processor.vqvaes.values():  # tokenizers keep their own float32, on the CPU
        assert module_placement(vqvae) == (torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="ids must"):
        pipe.processor.decode({"tok_depth": torch.full((1, 16), 10**6)})
    assert all(module_placement(v) == (torch.device("cpu"), torch.float32) for v in pipe.processor.vqvaes.values())
