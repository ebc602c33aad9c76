"""The released 4M tokenizers load and run exactly as the reference.

For every folder under ``$FOURM_ML4M_FIXTURES/tokenizers/`` (default ../shared/fixtures/ml4m): load
it as is through ``FourMTokenizerModel.from_pretrained``, feed the stored ``in.*`` and compare every
stored tensor the io file has (code ids exactly; encoder, quantizer, decoder and output tensors to
1e-4). Plus save_pretrained / from_pretrained and the Auto classes in a fresh process, and the
unhappy paths (on fixture folders and on tiny random folders, so they also run without ../shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf import FourMMLPVQVAE, FourMMLPVQVAEConfig, FourMTokenizerModel, FourMViTVQVAE, FourMViTVQVAEConfig
from fourm_hf.tokenizers.released_layout import save_in_released_layout
from fourm_hf.tokenizers.vit_blocks import vit_preset_size

from conftest import REPO_ROOT, SHARED_DIR, subprocess_env

FIXTURE_DIR = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m")) / "tokenizers"
FOLDERS = sorted(path for path in FIXTURE_DIR.glob("*") if (path / "config.json").is_file()) if FIXTURE_DIR.is_dir() else []
ATOL = 1e-4
# io-key prefixes compared here; the DiVAE's training-style call (train.*) and schedule (sched.*) are
# checked by tests/test_divae*.py, the inputs (in.*) are what is fed.
CHECKED_PREFIXES = ("enc.", "quant.", "dec.", "out.", "ddim.", "grid16.")


def _folder_params():
    if not FOLDERS:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no tokenizer fixture folders in {FIXTURE_DIR} "
                                                                  "(set FOURM_ML4M_FIXTURES or provide ../shared)"))]
    return [pytest.param(path, id=path.name) for path in FOLDERS]


def _meta(folder: Path) -> dict:
    path = folder / f"{folder.name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _overrides(folder: Path) -> dict:
    """Head counts from ``<name>.json`` -> ``fixture_presets`` for ViT preset names that do not spell them."""
    config, presets = json.loads((folder / "config.json").read_text()), _meta(folder).get("fixture_presets", {})
    overrides = {}
    for key, side in (("enc_type", "encoder"), ("dec_type", "decoder")):
        name = config.get(key, "")
        if name.startswith("vit") and name in presets and vit_preset_size(name)[2] is None:
            overrides[f"{side}_num_heads"] = presets[name]["num_heads"]
    return overrides


def _load(folder: Path):
    return FourMTokenizerModel.from_pretrained(folder, **_overrides(folder))


def _run(model, io: dict, meta: dict, prefix: str = "") -> dict:
    """Encode ``<prefix>in.x`` and decode its ids, recording every intermediate under ``prefix``."""
    record: dict = {}
    with torch.no_grad():
        ids = model.encode(io[f"{prefix}in.x"], intermediates=record)
        record["quant.ids"] = ids
        decode_kwargs = {}
        if f"{prefix}ddim.initial_noise" in io:  # diffusion decoders: the stored noise and step count
            decode_kwargs = {"num_steps": meta["ddim"]["num_inference_steps"], "initial_noise": io[f"{prefix}ddim.initial_noise"],
                             "progress": False}
        record["out.decoded"] = model.decode(ids, intermediates=record, **decode_kwargs)
    return {prefix + key: value for key, value in record.items()}


def _derive(key: str, produced: dict) -> torch.Tensor | None:
    """The value of a stored key from what the model produced (crops, sums, argmax per the fixture README)."""
    if key in produced:
        return produced[key]
    prefix, _, name = key.rpartition(".")
    base = f"{prefix}." if prefix else ""
    decoded = produced.get("out.decoded")
    if key == "out.logits_crop" and decoded is not None:
        return decoded[:, :, 96:128, 192:224]
    if key == "out.argmax" and decoded is not None:
        return decoded.argmax(dim=1).to(torch.uint8)
    if key == "out.logits_channel_sum" and decoded is not None:
        return decoded.sum(dim=(2, 3))
    for suffix, derive in (("_crop", lambda t: t[:, :, :32, :32]), ("_sum", lambda t: t.flatten(1).sum(dim=1))):
        if name.endswith(suffix) and base + name[: -len(suffix)] in produced:
            return derive(produced[base + name[: -len(suffix)]])
    return None


def _tolerance(key: str, expected: torch.Tensor) -> float:
    """1e-4 absolute; sums over many pixels get 1e-4 per summed value's share (float accumulation)."""
    if key.endswith("_sum"):
        return ATOL * max(1.0, float(expected.abs().max()) * 1e-2)
    return ATOL


@pytest.mark.parametrize("folder", _folder_params())
def test_released_tokenizer(folder):
    model = _load(folder)
    io, meta = load_file(folder / f"{folder.name}_io.safetensors"), _meta(folder)
    produced = _run(model, io, meta)
    if "grid16.in.x" in io:  # the same model on a second grid size
        produced.update(_run(model, io, meta, prefix="grid16."))
    checked, unchecked = [], []
    for key, expected in io.items():
        if not key.startswith(CHECKED_PREFIXES) or key.endswith("in.x"):
            continue
        actual = _derive(key, produced)
        if actual is None:
            unchecked.append(key)
            continue
        assert tuple(actual.shape) == tuple(expected.shape), f"{folder.name} {key}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        if not expected.is_floating_point():
            assert torch.equal(actual.to(expected.dtype), expected), f"{folder.name} {key}: differs"
        else:
            error = (actual.float() - expected.float()).abs().max().item()
            assert error <= _tolerance(key, expected), f"{folder.name} {key}: max abs error {error:.2e}"
        checked.append(key)
    assert not unchecked, f"{folder.name}: stored tensors this test could not reproduce: {unchecked}"
    assert "quant.ids" in checked and any(key.startswith("out.") for key in checked)


@pytest.mark.parametrize("folder", _folder_params())
def test_released_folder_loads_with_its_own_class(folder):
    family = FourMTokenizerModel.family_of(folder)
    model = family.from_pretrained(folder, **_overrides(folder))
    assert type(model) is family
    weights = load_file(folder / "model.safetensors")
    state = model.state_dict()
    assert set(state) == set(weights)
    assert all(torch.equal(state[key], weights[key]) for key in weights)


@pytest.mark.parametrize("folder", _folder_params())
def test_head_counts_from_preset_names_agree_with_the_fixture_json(folder):
    config = json.loads((folder / "config.json").read_text())
    for key, preset in _meta(folder).get("fixture_presets", {}).items():
        if key.startswith("vit") and key in (config.get("enc_type"), config.get("dec_type")):
            width, depth, heads = vit_preset_size(key)
            if heads is not None:
                assert heads == preset["num_heads"], key
            if width is not None:
                assert width == preset["dim_tokens"], key


# ---- round trips in a fresh process ---------------------------------------------------------------
_CHILD = r"""
import sys, torch
from safetensors.torch import load_file, save_file
import fourm_hf
from transformers import AutoConfig, AutoModel
from fourm_hf import FourMTokenizerModel
out = {}
for index, (folder, input_path) in enumerate(zip(sys.argv[2::2], sys.argv[3::2])):
    inputs = load_file(input_path)["x"]
    config = AutoConfig.from_pretrained(folder)
    auto = AutoModel.from_pretrained(folder).eval()
    generic = FourMTokenizerModel.from_pretrained(folder)
    assert type(auto) is type(generic), (type(auto), type(generic))
    print(folder, type(config).__name__, type(auto).__name__)
    with torch.no_grad():
        out[f"{index}.ids"] = auto.encode(inputs)
        out[f"{index}.generic_ids"] = generic.encode(inputs)
        for key, value in auto.state_dict().items():
            out[f"{index}.state.{key}"] = value.contiguous()
save_file(out, sys.argv[1])
"""


def _round_trip_in_fresh_process(models_and_inputs: list, tmp_path: Path) -> list[dict]:
    """save_pretrained each model, reload it in a child process via AutoModel and FourMTokenizerModel;
    returns per model the child's ids and state dict."""
    arguments = []
    for index, (model, inputs) in enumerate(models_and_inputs):
        saved = tmp_path / f"saved{index}"
        model.save_pretrained(saved)
        assert json.loads((saved / "config.json").read_text())["model_type"] == model.config.model_type
        assert (saved / "model.safetensors").is_file() and not list(saved.glob("*.bin"))
        save_file({"x": inputs.contiguous()}, tmp_path / f"inputs{index}.safetensors")
        arguments += [str(saved), str(tmp_path / f"inputs{index}.safetensors")]
    result_path = tmp_path / "child.safetensors"
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, str(result_path), *arguments], env=subprocess_env(), capture_output=True, text=True,
        timeout=300, cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    child = load_file(result_path)
    results = []
    for index in range(len(models_and_inputs)):
        prefix = f"{index}."
        results.append({key[len(prefix):]: value for key, value in child.items() if key.startswith(prefix)})
    return results


# ---- tiny random tokenizers (no ../shared needed) ------------------------------------------------------
def _tiny_vit(**overrides) -> FourMViTVQVAE:
    settings = dict(enc_type="vit_tiny_d32_l1_h2_enc", dec_type="vit_tiny_d32_l1_h2_dec", image_size=64, n_channels=3,
                    codebook_size=16, latent_dim=8)
    torch.manual_seed(0)
    return FourMViTVQVAE(FourMViTVQVAEConfig(**{**settings, **overrides})).eval()


def _tiny_mlp() -> FourMMLPVQVAE:
    torch.manual_seed(0)
    config = FourMMLPVQVAEConfig(enc_type="BottleneckMLP/B_1-Wi_16", dec_type="BottleneckMLP/B_1-Wi_16", n_channels=12,
                                 latent_dim=32, codebook_size=8, num_codebooks=4)
    return FourMMLPVQVAE(config).eval()


def test_round_trip_through_auto_classes_in_a_fresh_process(tmp_path):
    """Tiny random tokenizers of each family, and every fixture folder (loaded from the released layout),
    saved with save_pretrained and reloaded in one child process via AutoModel and FourMTokenizerModel."""
    semseg, features, poses = _tiny_vit(n_labels=5, n_channels=4), _tiny_vit(patch_proj=False, n_channels=6), _tiny_mlp()
    cases = [(semseg, torch.randint(0, 5, (2, 32, 32))), (features, torch.randn(1, 6, 3, 5)), (poses, torch.randn(3, 12, 1, 1))]
    for folder in FOLDERS:
        cases.append((_load(folder), load_file(folder / f"{folder.name}_io.safetensors")["in.x"]))
    results = _round_trip_in_fresh_process(cases, tmp_path)
    for (model, inputs), result in zip(cases, results):
        with torch.no_grad():
            expected_ids = model.encode(inputs)
        assert torch.equal(result["ids"], expected_ids) and torch.equal(result["generic_ids"], expected_ids)
        assert all(torch.equal(result[f"state.{key}"], value) for key, value in model.state_dict().items())


def test_released_layout_written_by_us_loads_as_is(tmp_path):
    model = _tiny_vit(out_conv=True, n_channels=1)
    save_in_released_layout(model, tmp_path / "released")
    config = json.loads((tmp_path / "released" / "config.json").read_text())
    assert "model_type" not in config and config["dec_type"] == "vit_tiny_d32_l1_h2_dec"
    loaded = FourMTokenizerModel.from_pretrained(tmp_path / "released")
    masks = (torch.rand(2, 1, 64, 64) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(loaded.encode(masks), model.encode(masks))
        torch.testing.assert_close(loaded.decode(model.encode(masks)), model.decode(model.encode(masks)))


def test_vit_vqvae_output_shapes_and_grid_resizing():
    model = _tiny_vit()
    images = torch.rand(2, 3, 32, 48) * 2 - 1  # a 2x3 grid from a 4x4 position table
    with torch.no_grad():
        ids = model.encode(images)
        assert ids.shape == (2, 2, 3) and ids.dtype == torch.int64
        assert model.decode(ids).shape == (2, 3, 32, 48)
        output = model(images)
    assert torch.equal(output.ids, ids) and output.reconstruction.shape == images.shape


def test_mlp_tokenizer_accepts_flat_vectors():
    model = _tiny_mlp()
    vectors = torch.randn(3, 12)
    with torch.no_grad():
        ids = model.encode(vectors)
        assert ids.shape == (3, 4, 1, 1)
        flat = model.decode(ids[:, :, 0, 0])
        assert flat.shape == (3, 12)
        torch.testing.assert_close(flat, model.decode(ids)[:, :, 0, 0])


# ---- unhappy paths ---------------------------------------------------------------------------------------
def _released_copy(model, tmp_path: Path, name: str = "released") -> Path:
    folder = tmp_path / name
    save_in_released_layout(model, folder)
    return folder


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_folder_of_another_kind_is_a_clear_error(tmp_path):
    (tmp_path / "fm").mkdir()
    (tmp_path / "fm" / "config.json").write_text(json.dumps({"dim": 64, "encoder_depth": 2, "domains_in": ["rgb@224"]}))
    with pytest.raises(ValueError, match="no 'dec_type'"):
        FourMTokenizerModel.from_pretrained(tmp_path / "fm")
    fourm_hf.FourMConfig().save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="not a 4M tokenizer"):
        FourMTokenizerModel.from_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="not a folder with a config.json"):
        FourMTokenizerModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="missing' is not a folder with a config.json"):
        FourMTokenizerModel.from_pretrained(tmp_path / "missing")


def test_wrong_family_class_is_a_clear_error(tmp_path):
    vit_folder = _released_copy(_tiny_vit(), tmp_path, "vit")
    with pytest.raises(ValueError, match="BottleneckMLP"):
        FourMMLPVQVAE.from_pretrained(vit_folder)
    mlp_folder = _released_copy(_tiny_mlp(), tmp_path, "mlp")
    with pytest.raises(ValueError, match="'vit'"):
        FourMViTVQVAE.from_pretrained(mlp_folder)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"quant_type": "fsq"}, "quant_type must be one of"),
        ({"norm_codes": False}, "norm_codes=True"),
        ({"undo_std": True}, "undo_std=True is not supported"),
        ({"dec_type": "convnext_dec"}, "Unknown released tokenizer family"),
        ({"enc_type": "vit_b_enc"}, "encoder weights have dim 32, but the preset 'vit_b_enc' has dim 768"),
        ({"enc_type": "vit_custom_enc"}, "does not give encoder_num_heads"),
        ({"surprise_option": 3}, "does not know: \\['surprise_option'\\]"),
    ],
    ids=["quant_type", "norm_codes", "undo_std", "dec_type", "preset_width", "no_heads", "unknown_key"],
)
def test_unknown_config_values_are_clear_errors(tmp_path, changes, message):
    folder = _released_copy(_tiny_vit(), tmp_path)
    _edit_config(folder, **changes)
    with pytest.raises(ValueError, match=message):
        FourMTokenizerModel.from_pretrained(folder)


def test_heads_for_unnamed_presets_come_from_an_argument(tmp_path):
    folder = _released_copy(_tiny_vit(), tmp_path)
    _edit_config(folder, enc_type="vit_custom_enc", dec_type="vit_custom_dec")
    model = FourMTokenizerModel.from_pretrained(folder, encoder_num_heads=2, decoder_num_heads=4)
    assert model.encoder.num_heads == 2 and model.decoder.num_heads == 4
    with pytest.raises(ValueError, match="divisible"):
        FourMTokenizerModel.from_pretrained(folder, encoder_num_heads=3, decoder_num_heads=2)
    _edit_config(folder, enc_type="vit_tiny_d32_l1_h2_enc")
    with pytest.raises(ValueError, match="disagrees with the preset"):
        FourMTokenizerModel.from_pretrained(folder, encoder_num_heads=4, decoder_num_heads=2)


def test_missing_or_mis_shaped_weights_are_clear_errors(tmp_path):
    folder = _released_copy(_tiny_vit(), tmp_path)
    weights = load_file(folder / "model.safetensors")
    save_file({key: value for key, value in weights.items() if key != "quantize._codebook.embed"}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="missing from model.safetensors: \\['quantize._codebook.embed'\\]"):
        FourMTokenizerModel.from_pretrained(folder)
    save_file({**weights, "post_quant_proj.bias": torch.zeros(7)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="'post_quant_proj.bias' has shape \\(7,\\)"):
        FourMTokenizerModel.from_pretrained(folder)
    save_file({**weights, "extra.weight": torch.zeros(1)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="does not use: \\['extra.weight'\\]"):
        FourMTokenizerModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="only safetensors"):
        FourMTokenizerModel.from_pretrained(folder)


def test_config_disagreeing_with_the_weights_is_a_clear_error(tmp_path):
    folder = _released_copy(_tiny_vit(), tmp_path)
    _edit_config(folder, n_channels=4)
    expected = "'encoder.proj.weight' has shape \\(32, 3, 16, 16\\), the configuration expects \\(32, 4, 16, 16\\)"
    with pytest.raises(ValueError, match=expected):
        FourMTokenizerModel.from_pretrained(folder)
    _edit_config(folder, n_channels=3, image_size=128)
    with pytest.raises(ValueError, match="pos_emb' has shape \\(1, 32, 4, 4\\), the configuration expects \\(1, 32, 8, 8\\)"):
        FourMTokenizerModel.from_pretrained(folder)


def test_wrong_inputs_and_ids_are_clear_errors():
    model, semseg, mlp = _tiny_vit(), _tiny_vit(n_labels=5, n_channels=4), _tiny_mlp()
    with pytest.raises(ValueError, match="shape \\(B, 3, H, W\\)"):
        model.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model.encode(torch.zeros(1, 3, 40, 32))
    with pytest.raises(ValueError, match="integer class ids"):
        semseg.encode(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="lie in \\[0, 5\\)"):
        semseg.encode(torch.full((1, 32, 32), 5))
    with pytest.raises(ValueError, match="ids must lie in \\[0, 16\\)"):
        model.decode(torch.full((1, 2, 2), 16))
    with pytest.raises(ValueError, match="shape \\(B, h, w\\)"):
        model.decode(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape \\(B, 12\\)"):
        mlp.encode(torch.zeros(2, 13))
    with pytest.raises(ValueError, match="shape \\(B, 4\\)"):
        mlp.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="use FourMTokenizerModel.from_pretrained"):
        FourMTokenizerModel()


def test_released_preset_names_give_the_released_sizes():
    semseg = FourMViTVQVAEConfig(enc_type="vit_b_enc", dec_type="vit_b_dec", image_size=448, n_labels=134, n_channels=64,
                                 codebook_size=4096)
    assert (semseg.encoder_dim, semseg.encoder_depth, semseg.encoder_num_heads) == (768, 12, 12)
    assert semseg.input_kind == "semseg" and semseg.output_channels == 134
    assert vit_preset_size("vit_s_enc") == (512, 8, 8) and vit_preset_size("vit_l_dec") == (1024, 24, 16)
    poses = FourMMLPVQVAEConfig(enc_type="BottleneckMLP/B_6-Wi_1024", dec_type="BottleneckMLP/B_6-Wi_1024", n_channels=207,
                                codebook_size=1024, num_codebooks=8)
    assert (poses.encoder_width, poses.encoder_depth, poses.decoder_width) == (1024, 6, 1024)
    with pytest.raises(ValueError, match="disagrees with preset 'vit_b_enc'"):
        FourMViTVQVAEConfig(enc_type="vit_b_enc", encoder_dim=512)
