"""FourMProcessor with released-layout 4M tokenizers: RGB / depth / normals (DiVAE), semseg (ViT VQ-VAE)
and CLIP / DINOv2 feature maps computed from the image by a local transformers vision model, mixed
with one of our FSQ VQ-VAEs, on a real photograph; and through save_pretrained / from_pretrained.

The tokenizers are tiny and random, written in the released Hub layout (``config.json`` without
``model_type``) and loaded from there with ``FourMTokenizerModel``, as a downloaded one would be.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf import (FourMDiVAE, FourMDiVAEConfig, FourMMLPVQVAE, FourMMLPVQVAEConfig, FourMTokenizerModel, FourMViTVQVAE,
                      FourMViTVQVAEConfig)
from fourm_hf.testing_utils import tiny_vqvae
from fourm_hf.tokenizers.feature_maps import VisionFeatureExtractor
from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.tokenizers.released_layout import save_in_released_layout
from fourm_hf.tokenizers.released_modalities import ReleasedModalityTokenizer, truncated_depth_standardization
from fourm_hf.text.tokenization_fourm import train_text_tokenizer

from conftest import SHARED_DIR

SIZE, CLASSES = 64, 5
VIT = dict(enc_type="vit_tiny_d32_l1_h2_enc", image_size=SIZE, codebook_size=16, latent_dim=8)


def _divae(n_channels: int, seed: int) -> FourMDiVAE:
    torch.manual_seed(seed)
    model = FourMDiVAE(FourMDiVAEConfig(dec_type="unet_patched_tiny_c32_r1", n_channels=n_channels, **VIT)).eval()
    with torch.no_grad():  # the UNet's zero-initialised output layers would make every decode constant
        for parameter in model.decoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def _vit(seed: int, **overrides) -> FourMViTVQVAE:
    torch.manual_seed(seed)
    return FourMViTVQVAE(FourMViTVQVAEConfig(dec_type="vit_tiny_d32_l1_h2_dec", **{**VIT, **overrides})).eval()


def _vision_models(folder):
    """Tiny random CLIP (with projection, 24-d) and DINOv2 (32-d) vision models saved as local folders."""
    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=SIZE, patch_size=16,
        projection_dim=24))
    clip.save_pretrained(folder / "clip")
    dinov2 = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                      image_size=SIZE, patch_size=8))
    dinov2.save_pretrained(folder / "dinov2")
    return folder / "clip", folder / "dinov2"


def _photo_maps():
    """The astronaut photograph with a synthetic depth ramp, its normals and an intensity-based class map."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (pip install -e .[demo])")
    rgb = skimage_data.astronaut()  # (512, 512, 3) uint8
    rows = np.linspace(1.0, 0.0, rgb.shape[0], dtype=np.float32)[:, None]
    depth = (1.5 + 3.0 * rows + 0.3 * rgb.mean(axis=2) / 255.0).astype(np.float32)  # metres, > 0
    dz_dy, dz_dx = np.gradient(depth)
    normal = np.stack([-dz_dx * 100, -dz_dy * 100, np.ones_like(depth)], axis=-1)
    normal = (normal / np.linalg.norm(normal, axis=-1, keepdims=True)).astype(np.float32)
    semseg = np.minimum(rgb.mean(axis=2) // (256 / CLASSES), CLASSES - 1).astype(np.int64)
    return dict(images=rgb, depth=depth, normal=normal, semseg=semseg)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Released-layout folders of every tokenizer, plus the vision model folders."""
    root = tmp_path_factory.mktemp("released")
    models = {
        "rgb": _divae(3, 0), "depth": _divae(1, 1), "normal": _divae(3, 2), "semseg": _vit(3, n_labels=CLASSES, n_channels=4),
        "clip": _vit(4, patch_proj=False, n_channels=24), "dinov2": _vit(5, patch_proj=False, n_channels=32),
    }
    for name, model in models.items():
        save_in_released_layout(model, root / name)
    return root, _vision_models(tmp_path_factory.mktemp("vision"))


def _build_processor(released) -> FourMProcessor:
    root, (clip_folder, dinov2_folder) = released
    wrap = ReleasedModalityTokenizer
    vqvaes = {
        "tok_rgb": wrap(FourMTokenizerModel.from_pretrained(root / "rgb"), "tok_rgb", image_size=SIZE, num_diffusion_steps=2),
        "tok_depth": wrap(FourMTokenizerModel.from_pretrained(root / "depth"), "tok_depth", image_size=SIZE, num_diffusion_steps=2),
        "tok_normal": wrap(FourMTokenizerModel.from_pretrained(root / "normal"), "tok_normal", image_size=SIZE, num_diffusion_steps=2),
        "tok_semseg": wrap(FourMTokenizerModel.from_pretrained(root / "semseg"), "tok_semseg", image_size=SIZE),
        "tok_clip": wrap(FourMTokenizerModel.from_pretrained(root / "clip"), "tok_clip", image_size=SIZE, feature_extractor=clip_folder),
        "tok_dinov2": wrap(FourMTokenizerModel.from_pretrained(root / "dinov2"), "tok_dinov2", image_size=SIZE,
                           feature_extractor=dinov2_folder),
        "tok_rgb_fsq": _fsq_rgb(),
    }
    tokenizer = train_text_tokenizer(["an astronaut in a white suit"], vocab_size=120, class_names=["person"], num_sentinels=4,
                                     coord_bins=16)
    return FourMProcessor(FourMImageProcessor(image_size=SIZE, num_semseg_classes=CLASSES), tokenizer, vqvaes=vqvaes)


def _fsq_rgb():
    vqvae = tiny_vqvae("rgb", image_size=SIZE, patch_size=16, seed=7)
    vqvae.config.modality = "tok_rgb_fsq"
    return vqvae


@pytest.fixture(scope="module")
def processor(released):
    return _build_processor(released)


@pytest.fixture(scope="module")
def tokens(processor):
    return processor(**_photo_maps())


def test_photo_encodes_to_every_modality(processor, tokens):
    grids = {"tok_rgb": 4, "tok_depth": 4, "tok_normal": 4, "tok_semseg": 4, "tok_clip": 4, "tok_dinov2": 8, "tok_rgb_fsq": 4}
    for name, grid in grids.items():
        ids = tokens[name]
        assert ids.shape == (1, grid * grid) and ids.dtype == torch.int64, name
        assert 0 <= int(ids.min()) and int(ids.max()) < processor.vqvaes[name].config.vocab_size, name
    assert tokens["pixel_values"].shape == (1, 3, SIZE, SIZE)


def test_encoding_applies_the_reference_transforms(processor):
    maps = _photo_maps()
    processed = processor.image_processor(**maps, return_tensors=None)
    rgb = torch.as_tensor(processed["tokenizer_rgb"]).float()
    depth = torch.as_tensor(processed["depth"]).float()
    tokens = processor(**maps)
    with torch.no_grad():
        assert torch.equal(tokens["tok_rgb"][0], processor.vqvaes["tok_rgb"].tokenizer.encode(rgb).flatten())
        standardised = truncated_depth_standardization(depth)
        assert torch.equal(tokens["tok_depth"][0], processor.vqvaes["tok_depth"].tokenizer.encode(standardised).flatten())
        clip = processor.vqvaes["tok_clip"]
        assert torch.equal(tokens["tok_clip"][0], clip.tokenizer.encode(clip.feature_extractor(rgb)).flatten())


def test_truncated_depth_standardization_uses_the_middle_80_percent():
    depth = torch.arange(1, 101, dtype=torch.float32).view(1, 1, 10, 10)
    units = depth * 512 / 65535
    middle = units.flatten()[10:90].double()
    expected = (units.double() - middle.mean()) / torch.sqrt(middle.var() + 1e-6)
    torch.testing.assert_close(truncated_depth_standardization(depth).double(), expected, atol=1e-5, rtol=1e-5)


def test_feature_extractors_give_the_tokenizers_grids(released):
    _, (clip_folder, dinov2_folder) = released
    rgb = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    clip, dinov2 = VisionFeatureExtractor.from_pretrained(clip_folder), VisionFeatureExtractor.from_pretrained(dinov2_folder)
    assert clip(rgb).shape == (2, 24, 4, 4) and dinov2(rgb).shape == (2, 32, 8, 8)
    with torch.no_grad():  # CLIP: post_layernorm on every token, then the visual projection
        pixels = ((rgb + 1) / 2 - torch.tensor(clip.image_mean).view(1, 3, 1, 1)) / torch.tensor(clip.image_std).view(1, 3, 1, 1)
        vision = clip.model.vision_model
        hidden = clip.model.visual_projection(vision.post_layernorm(vision(pixel_values=pixels).last_hidden_state))[:, 1:]
    torch.testing.assert_close(clip(rgb), hidden.transpose(1, 2).reshape(2, 24, 4, 4))


def test_decode_renders_every_modality(processor, tokens):
    decoded = processor.decode(tokens, num_diffusion_steps=2, generator=0)
    rgb, depth, normal = decoded["tok_rgb"]["array"], decoded["tok_depth"]["array"], decoded["tok_normal"]["array"]
    assert rgb.shape == (1, SIZE, SIZE, 3) and rgb.dtype == np.uint8
    assert depth.shape == (1, SIZE, SIZE) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert normal.shape == (1, SIZE, SIZE, 3) and normal.dtype == np.float32 and np.abs(normal).max() <= 1
    semseg = decoded["tok_semseg"]["array"]
    assert semseg.shape == (1, SIZE, SIZE) and semseg.dtype == np.int64 and 0 <= semseg.min() and semseg.max() < CLASSES
    assert decoded["tok_clip"]["array"].shape == (1, 4, 4, 24) and decoded["tok_clip"]["image"] is None
    assert decoded["tok_dinov2"]["array"].shape == (1, 8, 8, 32)
    assert decoded["tok_rgb_fsq"]["array"].shape == (1, SIZE, SIZE, 3)
    for name in ("tok_rgb", "tok_depth", "tok_normal", "tok_semseg"):
        image = decoded[name]["image"][0]
        assert isinstance(image, Image.Image) and image.size == (SIZE, SIZE) and image.mode == "RGB", name


def test_diffusion_steps_and_seed_are_decode_options(processor, tokens):
    subset = {"tok_rgb": tokens["tok_rgb"]}
    first = processor.decode(subset, num_diffusion_steps=2, generator=0)["tok_rgb"]["array"]
    again = processor.decode(subset, num_diffusion_steps=2, generator=0)["tok_rgb"]["array"]
    other_seed = processor.decode(subset, num_diffusion_steps=2, generator=1)["tok_rgb"]["array"]
    more_steps = processor.decode(subset, num_diffusion_steps=3, generator=0)["tok_rgb"]["array"]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_seed) and not np.array_equal(first, more_steps)


def test_processor_round_trips_through_save_and_load(processor, tokens, tmp_path):
    processor.save_pretrained(tmp_path / "processor")
    assert (tmp_path / "processor" / "vqvae" / "tok_clip" / "feature_model" / "config.json").is_file()
    reloaded = FourMProcessor.from_pretrained(tmp_path / "processor")
    assert sorted(reloaded.vqvaes) == sorted(processor.vqvaes)
    assert type(reloaded.vqvaes["tok_rgb"].tokenizer) is FourMDiVAE
    again = reloaded(**_photo_maps())
    assert all(torch.equal(again[name], tokens[name]) for name in tokens)
    subset = {name: tokens[name] for name in ("tok_rgb", "tok_semseg", "tok_clip", "tok_rgb_fsq")}
    before = processor.decode(subset, num_diffusion_steps=2, generator=0)
    after = reloaded.decode(subset, num_diffusion_steps=2, generator=0)
    for name in subset:
        assert np.array_equal(before[name]["array"], after[name]["array"]), name


def test_mismatched_tokenizers_are_clear_errors(released):
    root, (clip_folder, _) = released
    rgb_divae, semseg = FourMTokenizerModel.from_pretrained(root / "rgb"), FourMTokenizerModel.from_pretrained(root / "semseg")
    with pytest.raises(ValueError, match="a depth tokenizer reads 1 channel"):
        ReleasedModalityTokenizer(rgb_divae, "tok_depth", image_size=SIZE)
    with pytest.raises(ValueError, match="an edge tokenizer reads 1 channel"):
        ReleasedModalityTokenizer(rgb_divae, "tok_sam_edge", image_size=SIZE)
    rgb = ReleasedModalityTokenizer(rgb_divae, "tok_rgb", image_size=SIZE)
    with pytest.raises(ValueError, match="'tok_rgb' is a rgb tokenizer; edges= is for edge tokenizers"):
        rgb.prepare_edges(np.zeros((SIZE, SIZE), dtype=np.float32))
    with pytest.raises(ValueError, match="needs feature_extractor"):
        ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(root / "clip"), "tok_clip", image_size=SIZE)
    with pytest.raises(ValueError, match="gives 24-d features, the tokenizer reads 32"):
        ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(root / "dinov2"), "tok_clip", image_size=SIZE,
                                  feature_extractor=clip_folder)
    with pytest.raises(ValueError, match="kind must be one of"):
        ReleasedModalityTokenizer(semseg, "tok_mystery", image_size=SIZE)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        ReleasedModalityTokenizer(semseg, "tok_semseg", image_size=72)


# ---- released bottleneck-MLP tokenizers (global embeddings, poses): vectors in, ids, vectors out -----------------
MLP_FIXTURE_DIR = SHARED_DIR / "fixtures" / "ml4m" / "tokenizers"


def _mlp_fixture_folders() -> list:
    """Every fixture tokenizer folder whose config names a bottleneck-MLP encoder (found by content, not name)."""
    if not MLP_FIXTURE_DIR.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{MLP_FIXTURE_DIR} is not available "
                                                                  "(../shared exists on developer machines and in CI only)"))]
    folders = [path for path in sorted(MLP_FIXTURE_DIR.iterdir()) if (path / "config.json").is_file()
               and json.loads((path / "config.json").read_text()).get("enc_type", "").startswith("BottleneckMLP/")]
    if not folders:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no bottleneck-MLP tokenizer folder in {MLP_FIXTURE_DIR}"))]
    return [pytest.param(path, id=path.name) for path in folders]


def _text_tokenizer():
    return train_text_tokenizer(["an astronaut in a white suit"], vocab_size=120, class_names=["person"], num_sentinels=4,
                                coord_bins=16)


def _vector_processor(tokenizer, modality: str, kind: str | None = None) -> FourMProcessor:
    wrapped = ReleasedModalityTokenizer(tokenizer, modality, kind, image_size=SIZE)
    return FourMProcessor(FourMImageProcessor(image_size=SIZE, num_semseg_classes=CLASSES), _text_tokenizer(),
                          vqvaes={modality: wrapped})


def _kind_of(tokenizer) -> str:
    return "pose" if tokenizer.config.n_channels == 23 * 3 * 3 else "vector"


@pytest.mark.parametrize("folder", _mlp_fixture_folders())
def test_mlp_fixture_vectors_encode_and_decode_as_the_reference(folder, tmp_path):
    io = load_file(folder / f"{folder.name}_io.safetensors")
    tokenizer = FourMTokenizerModel.from_pretrained(folder)
    kind, modality = _kind_of(tokenizer), f"tok_{folder.name}"
    processor = _vector_processor(tokenizer, modality, kind)
    inputs = io["in.x"][:, :, 0, 0]  # the reference fed [B, C, 1, 1]
    batch, channels = inputs.shape
    heads = tokenizer.config.num_codebooks
    vector_shape = (23, 3, 3) if kind == "pose" else (channels,)
    given = inputs.reshape(batch, *vector_shape).numpy()
    tokens = processor(vectors={modality: given})
    assert set(tokens) == {modality}
    ids = tokens[modality]
    assert ids.shape == (batch, heads) and ids.dtype == torch.int64
    assert torch.equal(ids, io["quant.ids"].reshape(batch, heads))  # head-major, exactly the reference's ids
    assert processor.vqvaes[modality].config.num_tokens == heads
    decoded = processor.decode(tokens)[modality]
    assert decoded["image"] is None
    array = decoded["array"]
    assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.shape == (batch, *vector_shape)
    expected = io["out.decoded"][:, :, 0, 0].reshape(batch, *vector_shape).numpy()
    np.testing.assert_allclose(array, expected, atol=1e-4, rtol=0)
    # one sample (no batch axis) and a pose given flattened give the same ids
    assert torch.equal(processor(vectors={modality: given[0]})[modality], ids[:1])
    assert torch.equal(processor(vectors={modality: inputs.numpy()})[modality], ids)
    # with text in the same call, and through save_pretrained / from_pretrained
    both = processor(text=["an astronaut"] * batch, vectors={modality: given})
    assert torch.equal(both[modality], ids) and both["caption"].shape[0] == batch
    processor.save_pretrained(tmp_path / "processor")
    reloaded = FourMProcessor.from_pretrained(tmp_path / "processor")
    assert reloaded.vqvaes[modality].config.input_kind == kind
    assert torch.equal(reloaded(vectors={modality: given})[modality], ids)
    np.testing.assert_array_equal(reloaded.decode(tokens)[modality]["array"], array)


@pytest.mark.parametrize("folder", _mlp_fixture_folders())
def test_mlp_fixture_bad_vectors_and_ids_are_clear_errors(folder):
    tokenizer = FourMTokenizerModel.from_pretrained(folder)
    modality = f"tok_{folder.name}"
    processor = _vector_processor(tokenizer, modality, _kind_of(tokenizer))
    channels, heads, vocab = tokenizer.config.n_channels, tokenizer.config.num_codebooks, tokenizer.config.codebook_size
    with pytest.raises(ValueError, match=rf"vectors\['{modality}'\]: expected shape .*got \(2, {channels + 1}\)"):
        processor(vectors={modality: np.zeros((2, channels + 1), np.float32)})
    with pytest.raises(ValueError, match="NaN or infinite"):
        processor(vectors={modality: np.full((1, channels), np.nan, np.float32)})
    with pytest.raises(ValueError, match="expected real numbers"):
        processor(vectors={modality: np.array([["a"] * channels])})
    with pytest.raises(ValueError, match=r"vectors\['tok_unknown'\]: no vector tokenizer is loaded"):
        processor(vectors={"tok_unknown": np.zeros((1, channels), np.float32)})
    with pytest.raises(ValueError, match="different batch sizes"):
        processor(text=["one", "two"], vectors={modality: np.zeros((3, channels), np.float32)})
    with pytest.raises(ValueError, match=rf"{modality}: ids must have shape \(B, {heads}\)"):
        processor.decode({modality: torch.zeros(1, heads + 1, dtype=torch.long)})
    with pytest.raises(ValueError, match=rf"{modality}: ids must lie in \[0, {vocab}\)"):
        processor.decode({modality: torch.full((1, heads), vocab, dtype=torch.long)})


def _tiny_mlp(n_channels: int, heads: int, seed: int = 0) -> FourMMLPVQVAE:
    torch.manual_seed(seed)
    config = FourMMLPVQVAEConfig(enc_type="BottleneckMLP/B_1-Wi_16", dec_type="BottleneckMLP/B_1-Wi_16", n_channels=n_channels,
                                 latent_dim=8 * heads, num_codebooks=heads, codebook_size=32)
    return FourMMLPVQVAE(config).eval()


def test_mlp_tokenizers_take_their_kind_from_the_name_and_the_family(released):
    dino, pose = _tiny_mlp(24, 4), _tiny_mlp(207, 8, seed=1)
    assert ReleasedModalityTokenizer(dino, "tok_dinov2_global", image_size=SIZE).config.input_kind == "vector"
    assert ReleasedModalityTokenizer(dino, "tok_imagebind_global", image_size=SIZE).config.input_kind == "vector"
    assert ReleasedModalityTokenizer(dino, "tok_my_embedding", image_size=SIZE).config.input_kind == "vector"
    wrapped = ReleasedModalityTokenizer(pose, "tok_pose", image_size=SIZE)
    assert wrapped.config.input_kind == "pose" and wrapped.token_shape == (8, 1, 1) and wrapped.vector_shape == (23, 3, 3)
    processor = _vector_processor(pose, "tok_pose")
    rotations = np.linalg.qr(np.random.default_rng(0).normal(size=(2, 23, 3, 3)))[0].astype(np.float32)
    tokens = processor(vectors={"tok_pose": rotations})
    assert tokens["tok_pose"].shape == (2, 8)
    with torch.no_grad():
        expected = pose.decode(pose.encode(torch.from_numpy(rotations).reshape(2, 207)))
    np.testing.assert_allclose(processor.decode(tokens)["tok_pose"]["array"], expected.reshape(2, 23, 3, 3).numpy(), atol=1e-6)
    # wrong families and kinds
    with pytest.raises(ValueError, match="bottleneck-MLP tokenizer tokenizes one vector per sample"):
        ReleasedModalityTokenizer(dino, "tok_rgb", kind="rgb", image_size=SIZE)
    with pytest.raises(ValueError, match="a pose tokenizer reads 207 values"):
        ReleasedModalityTokenizer(dino, "tok_pose", image_size=SIZE)
    root, _ = released
    with pytest.raises(ValueError, match="needs a bottleneck-MLP tokenizer"):
        ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(root / "semseg"), "tok_dinov2_global", image_size=SIZE)
    with pytest.raises(ValueError, match="vectors= is for the vector kinds"):
        ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(root / "semseg"), "tok_semseg",
                                  image_size=SIZE).prepare_vectors(np.zeros((1, 4)))


def test_a_feature_tokenizer_without_vision_model_is_decode_only(released, tmp_path):
    """grid_size= instead of feature_extractor=: ids -> features on that grid; encoding is a clear error, the
    processor's images= leaves it out, and it saves and loads with its grid."""
    root, _ = released
    grid = SIZE // 8
    wrapped = ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(root / "dinov2"), "tok_dinov2", image_size=SIZE,
                                        grid_size=grid)
    assert not wrapped.config.can_encode and wrapped.config.grid_size == grid and wrapped.token_shape == (grid, grid)
    with pytest.raises(ValueError, match="is decode-only: it has no feature_extractor"):
        wrapped.encode(torch.zeros(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="grid_size 5 does not divide image_size 64"):
        ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained(root / "dinov2"), "tok_dinov2", image_size=SIZE,
                                  grid_size=5)
    wrapped.save_pretrained(tmp_path / "decode-only")
    loaded = ReleasedModalityTokenizer.from_pretrained(tmp_path / "decode-only")
    assert loaded.config == wrapped.config
    processor = FourMProcessor(FourMImageProcessor(image_size=SIZE), _text_tokenizer(), vqvaes={"tok_dinov2": loaded})
    image = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    assert sorted(processor(images=[image])) == ["pixel_values"]  # not computed from the image
    ids = torch.randint(0, wrapped.config.vocab_size, (2, grid * grid))
    decoded = processor.decode({"tok_dinov2": ids})["tok_dinov2"]
    assert decoded["image"] is None and decoded["array"].shape == (2, grid, grid, 32) and decoded["array"].dtype == np.float32
