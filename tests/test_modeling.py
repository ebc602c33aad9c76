"""FourMModel behaviour on tiny configs: round trips, masks, attention backends, validation."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf import FourMConfig, FourMModel, ModalitySpec, register_modality
from fourm_hf.testing_utils import random_packed_batch, tiny_config

from conftest import subprocess_env


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    return FourMModel(config).eval()


@pytest.fixture(scope="module")
def batch(config):
    return random_packed_batch(config, batch_size=3, seed=1)


# ---- config ------------------------------------------------------------------------------------------
def test_presets_have_head_dim_64_and_swiglu_width():
    for preset, (dim, enc, dec) in fourm_hf.SIZE_PRESETS.items():
        config = FourMConfig.from_preset(preset)
        assert (config.hidden_size, config.num_encoder_layers, config.num_decoder_layers) == (dim, enc, dec)
        assert config.head_dim == 64
        assert config.intermediate_size == int(2 * 4 * dim / 3)
    assert FourMConfig.from_preset("base").intermediate_size == 2048


def test_config_round_trips_through_autoconfig(tmp_path, config):
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, FourMConfig)
    drop_path = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert drop_path(loaded.to_dict()) == drop_path(config.to_dict())
    assert loaded.modality_names == config.modality_names


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=65, num_attention_heads=2), "divisible"),
        (dict(image_size=30, patch_size=8), "multiple of patch_size"),
        (dict(loss_averaging="mean"), "loss_averaging"),
        (dict(output_modalities=["rgb"]), "only be an input"),
        (dict(input_modalities=["tok_rgb", "tok_rgb"]), "twice"),
        (dict(input_modalities=["tok_edges_unknown"]), "Unknown modality"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kwargs)
    with pytest.raises(ValueError, match="Unknown preset"):
        FourMConfig.from_preset("huge")


def test_user_registered_modality_trains_and_reloads_without_registration(tmp_path):
    register_modality(ModalitySpec("tok_edges_test", "image_tokens", vocab_size=20, num_channels=1, tokenizer="vqvae"))
    config = tiny_config(input_modalities=["tok_rgb", "tok_edges_test"], output_modalities=["tok_edges_test", "caption"])
    model = FourMModel(config)
    out = model(**random_packed_batch(config, seed=3))
    assert out.loss.isfinite() and set(out.logits) == {"tok_edges_test", "caption"}
    model.save_pretrained(tmp_path)
    # the saved config is self-contained: a fresh process that never registered the modality loads it
    code = f"import fourm_hf; from transformers import AutoModel; m = AutoModel.from_pretrained({str(tmp_path)!r}); print(m.config.modality('tok_edges_test').vocab_size)"
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("20")


# ---- model round trips --------------------------------------------------------------------------------
def test_model_round_trips_through_automodel_in_a_fresh_process(tmp_path, model, batch):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, FourMModel)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        expected = model(**batch).loss.item()
        assert loaded(**batch).loss.item() == expected
    torch.save(batch, tmp_path / "batch.pt")
    code = (
        "import torch, fourm_hf; from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(tmp_path)!r}).eval(); b = torch.load({str(tmp_path / 'batch.pt')!r})\n"
        "print(repr(m(**b).loss.item()))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, check=True)
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-6)


def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path, model, batch):
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_fourm.FourMModel"
    torch.save(batch, tmp_path / "batch.pt")
    code = (
        "import sys, torch; sys.modules['fourm_hf'] = None  # make the package unimportable\n"
        "from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()\n"
        f"assert 'transformers_modules' in type(m).__module__, type(m).__module__\n"
        f"print(repr(m(**torch.load({str(tmp_path / 'batch.pt')!r})).loss.item()))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with torch.no_grad():
        assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(model(**batch).loss.item(), abs=1e-6)


# ---- computation ---------------------------------------------------------------------------------------
def test_sdpa_and_eager_give_the_same_numbers(config, batch):
    eager_config = copy.deepcopy(config)
    eager_config._attn_implementation = "eager"
    torch.manual_seed(0)
    sdpa = FourMModel(copy.deepcopy(config)).eval()
    eager = FourMModel(eager_config).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    with torch.no_grad():
        a, b = sdpa(**batch), eager(**batch)
    torch.testing.assert_close(a.decoder_last_hidden_state, b.decoder_last_hidden_state, atol=1e-5, rtol=0)
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-6)


def test_attn_implementation_is_selectable_at_load(tmp_path, model, batch):
    model.save_pretrained(tmp_path)
    eager = AutoModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = AutoModel.from_pretrained(tmp_path).eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(eager(**batch).encoder_last_hidden_state, sdpa(**batch).encoder_last_hidden_state,
                                   atol=1e-5, rtol=0)


def test_decoder_attention_stays_within_a_modality(model, config):
    rgb, caption, depth = (config.modality_id(n) for n in ("tok_rgb", "caption", "tok_depth"))
    modality_ids = torch.tensor([[rgb, rgb, caption, caption, caption, depth, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    allowed = model.decoder_self_attention_mask(modality_ids, valid)[0]
    expected = torch.tensor([
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
    ], dtype=torch.bool)
    assert torch.equal(allowed[:6], expected)


def test_padding_does_not_change_real_tokens(model, config, batch):
    """Appending padding slots (with garbage ids) leaves every real token's output unchanged."""
    padded = {}
    for key, value in batch.items():
        if value.dim() != 2:
            padded[key] = value
            continue
        fill = -100 if key == "labels" else (0 if "mask" in key else 5)
        padded[key] = torch.cat([value, torch.full((value.shape[0], 3), fill, dtype=value.dtype)], dim=1)
    with torch.no_grad():
        a, b = model(**batch), model(**padded)
    for name in a.logits:
        torch.testing.assert_close(a.logits[name], b.logits[name], atol=1e-5, rtol=0)
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-6)


def test_decoder_tokens_do_not_see_other_target_modalities(model, config, batch):
    """Changing one modality's target tokens leaves another modality's logits unchanged."""
    changed = {k: v.clone() for k, v in batch.items()}
    caption = config.modality_id("caption")
    is_caption = changed["decoder_modality_ids"] == caption
    changed["decoder_input_ids"][is_caption] = (changed["decoder_input_ids"][is_caption] + 7) % 96
    with torch.no_grad():
        a, b = model(**batch), model(**changed)
    torch.testing.assert_close(a.logits["tok_rgb"], b.logits["tok_rgb"], atol=1e-6, rtol=0)
    assert not torch.allclose(a.logits["caption"], b.logits["caption"])


def test_sequence_targets_are_causal(model, config):
    rgb, caption = config.modality_id("tok_rgb"), config.modality_id("caption")
    batch = {
        "input_ids": torch.tensor([[3, 9, 4]]), "input_modality_ids": torch.full((1, 3), rgb),
        "input_positions": torch.tensor([[0, 5, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "decoder_input_ids": torch.tensor([[4, 11, 12, 13, 14]]), "decoder_modality_ids": torch.full((1, 5), caption),
        "decoder_positions": torch.arange(5)[None], "labels": torch.tensor([[11, 12, 13, 14, 5]]),
    }
    changed = {k: v.clone() for k, v in batch.items()}
    changed["decoder_input_ids"][0, -1] = 40
    with torch.no_grad():
        a, b = model(**batch).logits["caption"], model(**changed).logits["caption"]
    torch.testing.assert_close(a[:-1], b[:-1], atol=1e-6, rtol=0)  # earlier tokens cannot see the last one
    assert not torch.allclose(a[-1], b[-1])


def test_loss_averaging_modes(config, batch):
    torch.manual_seed(0)
    model = FourMModel(config).eval()
    with torch.no_grad():
        out = model(**batch)
    per_modality = torch.stack(list(out.modality_losses.values()))
    assert out.loss.item() == pytest.approx(per_modality.sum().item() / len(config.output_modalities), abs=1e-6)
    model.config.loss_averaging = "token"
    with torch.no_grad():
        token_loss = model(**batch).loss
    counts = {n: (batch["labels"][(batch["decoder_modality_ids"] == config.modality_id(n)) & (batch["decoder_attention_mask"] == 1)] != -100).sum()
              for n in config.output_modalities}
    expected = sum(out.modality_losses[n] * counts[n] for n in counts) / sum(counts.values())
    assert token_loss.item() == pytest.approx(expected.item(), abs=1e-5)
    model.config.loss_averaging = "modality"


def test_modality_without_targets_counts_as_zero(model, config):
    batch = random_packed_batch(config, batch_size=2, seed=2)
    drop = batch["decoder_modality_ids"] == config.modality_id("tok_clip")
    batch["decoder_attention_mask"][drop] = 0
    batch["labels"][drop] = -100
    with torch.no_grad():
        out = model(**batch)
    assert out.modality_losses["tok_clip"].item() == 0.0
    assert out.logits["tok_clip"].shape == (0, 32)
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.modality_losses.values()) / 7, abs=1e-6)


def test_tied_output_embeddings_share_the_table(batch):
    config = tiny_config(tie_output_embeddings=True)
    model = FourMModel(config)
    embedding = model.decoder_embeddings["tok_rgb"]
    assert embedding.to_logits is None and embedding.logits_weight is embedding.token_emb.weight
    out = model(**batch)
    out.loss.backward()
    assert embedding.token_emb.weight.grad is not None and embedding.token_emb.weight.grad.abs().sum() > 0


def test_separate_modality_embeddings(batch):
    model = FourMModel(tiny_config(share_modality_embeddings=False))
    assert model.decoder_embeddings["caption"].mod_emb is not None
    assert model(**batch).loss.isfinite()


def test_activation_checkpointing_gives_the_same_gradients(config, batch):
    torch.manual_seed(0)
    plain = FourMModel(config).train()
    checkpointed = FourMModel(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.encoder[0].gradient_checkpointing
    plain(**batch).loss.backward()
    checkpointed(**batch).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0, msg=name)


def test_encoder_only_forward_and_features(model, config, batch):
    encoder_keys = ("input_ids", "input_modality_ids", "input_positions", "attention_mask", "pixel_values")
    encoder_inputs = {k: batch[k] for k in encoder_keys}
    with torch.no_grad():
        out = model(**encoder_inputs)
        tokens = model.get_encoder_features(**encoder_inputs)
        pooled = model.get_encoder_features(**encoder_inputs, pool=True)
    assert out.loss is None and out.logits is None
    torch.testing.assert_close(out.encoder_last_hidden_state, tokens)
    mask = batch["attention_mask"][0].bool()
    torch.testing.assert_close(pooled[0], tokens[0][mask].mean(0), atol=1e-6, rtol=0)


def test_pixel_patches_enter_the_encoder(model, config, batch):
    changed = dict(batch, pixel_values=batch["pixel_values"] + 1.0)
    with torch.no_grad():
        a, b = model(**batch), model(**changed)
    assert not torch.allclose(a.encoder_last_hidden_state, b.encoder_last_hidden_state)


# ---- validation ----------------------------------------------------------------------------------------
def _corrupt(batch, key, fn):
    bad = {k: v.clone() for k, v in batch.items()}
    bad[key] = fn(bad[key])
    return bad


def _first_real(batch, key, modality_key, modality_id):
    mask_key = "attention_mask" if key.startswith("input") else "decoder_attention_mask"
    hits = ((batch[modality_key] == modality_id) & (batch[mask_key] == 1)).nonzero()
    return tuple(hits[0].tolist())


@pytest.mark.parametrize("case", [
    "wrong_modality_id", "target_modality_as_output", "float_ids", "ids_out_of_vocab", "negative_ids",
    "position_beyond_table", "length_mismatch", "batch_mismatch", "missing_pixels", "pixels_wrong_size",
    "labels_out_of_vocab", "labels_without_decoder", "decoder_id_out_of_vocab", "one_dimensional",
])
def test_bad_inputs_raise_clear_errors(model, config, batch, case):
    caption = config.modality_id("caption")
    rgb_tokens = config.modality_id("tok_rgb")
    bad, message = None, None
    if case == "wrong_modality_id":
        bad, message = _corrupt(batch, "input_modality_ids", lambda t: t.index_fill(1, torch.tensor([0]), 99)), "input_modality_ids contains id 99"
    elif case == "target_modality_as_output":
        bad, message = _corrupt(batch, "decoder_modality_ids", lambda t: t.masked_fill(t == rgb_tokens, config.modality_id("rgb"))), "not a decoder"
    elif case == "float_ids":
        bad, message = _corrupt(batch, "input_ids", lambda t: t.float()), "input_ids must be an integer tensor"
    elif case == "ids_out_of_vocab":
        index = _first_real(batch, "input_ids", "input_modality_ids", rgb_tokens)
        bad, message = _corrupt(batch, "input_ids", lambda t: t.index_put((torch.tensor([index[0]]), torch.tensor([index[1]])), torch.tensor(64))), "input_ids for modality 'tok_rgb' must lie in \\[0, 64\\)"
    elif case == "negative_ids":
        index = _first_real(batch, "input_ids", "input_modality_ids", caption)
        bad, message = _corrupt(batch, "input_ids", lambda t: t.index_put((torch.tensor([index[0]]), torch.tensor([index[1]])), torch.tensor(-1))), "input_ids for modality 'caption'"
    elif case == "position_beyond_table":
        index = _first_real(batch, "input_positions", "input_modality_ids", rgb_tokens)
        bad, message = _corrupt(batch, "input_positions", lambda t: t.index_put((torch.tensor([index[0]]), torch.tensor([index[1]])), torch.tensor(16))), "input_positions for modality 'tok_rgb' must lie in \\[0, 16\\)"
    elif case == "length_mismatch":
        bad, message = _corrupt(batch, "input_positions", lambda t: t[:, :-1]), "same \\(batch, tokens\\) shape"
    elif case == "batch_mismatch":
        bad = {k: (v[:2] if k.startswith("decoder") or k == "labels" else v) for k, v in batch.items()}
        message = "batch sizes differ"
    elif case == "missing_pixels":
        bad, message = {k: v for k, v in batch.items() if k != "pixel_values"}, "pixel_values is None"
    elif case == "pixels_wrong_size":
        bad, message = _corrupt(batch, "pixel_values", lambda t: t[..., :16, :16]), "pixel_values for modality 'rgb' must have shape"
    elif case == "labels_out_of_vocab":
        index = _first_real(batch, "labels", "decoder_modality_ids", rgb_tokens)
        bad, message = _corrupt(batch, "labels", lambda t: t.index_put((torch.tensor([index[0]]), torch.tensor([index[1]])), torch.tensor(1000))), "labels for modality 'tok_rgb'"
    elif case == "labels_without_decoder":
        bad = {k: v for k, v in batch.items() if not k.startswith("decoder")}
        message = "labels were given without decoder tokens"
    elif case == "decoder_id_out_of_vocab":
        index = _first_real(batch, "decoder_input_ids", "decoder_modality_ids", caption)
        bad, message = _corrupt(batch, "decoder_input_ids", lambda t: t.index_put((torch.tensor([index[0]]), torch.tensor([index[1]])), torch.tensor(500))), "decoder_input_ids for modality 'caption'"
    elif case == "one_dimensional":
        bad, message = _corrupt(batch, "input_ids", lambda t: t[0]), "must have shape \\(batch, tokens\\)"
    with pytest.raises(ValueError, match=message):
        model(**bad)
