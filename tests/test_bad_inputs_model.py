"""Bad model inputs and bad checkpoints: unknown forward arguments, wrong dtypes, invalid configs,
incomplete or corrupt weights, unknown box labels, invisible captions. Named errors, never a silent
result (``loss=None`` for a typo, random weights for missing tensors)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from fourm_hf import FourMConfig, FourMModel, FourMProcessor
from fourm_hf.checkpoints import BUNDLED_CHECKPOINT
from fourm_hf.testing_utils import random_packed_batch, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FourMModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def batch(model):
    return random_packed_batch(model.config, batch_size=2, seed=0)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    return folder


# ---- forward arguments ---------------------------------------------------------------------------------
def test_a_misspelt_keyword_is_a_type_error(model, batch):
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['lables'\].*did you mean labels"):
        model(**batch, lables=batch["labels"])
    with pytest.raises(TypeError, match=r"\['position_ids'\].*input_positions"):
        model(**batch, position_ids=batch["input_positions"])


def test_the_trainers_num_items_in_batch_is_accepted(model, batch):
    with torch.no_grad():
        assert torch.equal(model(**batch, num_items_in_batch=7).loss, model(**batch).loss)


@pytest.mark.parametrize("field, dtype, message", [
    ("input_ids", torch.bool, r"input_ids must be an integer tensor of dtype torch.long.*got torch.bool \(a bool tensor is a mask"),
    ("input_ids", torch.uint8, r"input_ids must be an integer tensor of dtype torch.long \(or torch.int32\), got torch.uint8"),
    ("input_ids", torch.float32, r"input_ids must be an integer tensor"),
    ("input_positions", torch.int16, r"input_positions must be an integer tensor of dtype torch.long.*got torch.int16"),
    ("decoder_positions", torch.int8, r"decoder_positions must be an integer tensor.*torch.int8"),
    ("labels", torch.bool, r"labels must be an integer tensor"),
    ("attention_mask", torch.float32, r"attention_mask must be a bool or integer tensor"),
])
def test_wrong_dtypes_are_named(model, batch, field, dtype, message):
    with pytest.raises(TypeError, match=message):
        model(**{**batch, field: batch[field].to(dtype)})


def test_int32_ids_and_bool_masks_are_accepted(model, batch):
    narrow = {k: (v.to(torch.int32) if k != "pixel_values" and not k.endswith("attention_mask") else v) for k, v in batch.items()}
    narrow["attention_mask"] = batch["attention_mask"].bool()
    with torch.no_grad():
        assert torch.allclose(model(**narrow).loss, model(**batch).loss)


FIELDS = ["input_ids", "input_modality_ids", "input_positions", "attention_mask", "decoder_input_ids",
          "decoder_modality_ids", "decoder_positions", "decoder_attention_mask", "labels"]
DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), dtype=st.sampled_from(DTYPES), shift=st.integers(-3, 3), seed=st.integers(0, 3))
def test_random_batches_give_a_loss_or_a_named_error(model, field, dtype, shift, seed):
    """Random dtype and values for one field of a valid batch: a finite loss or a ValueError/TypeError naming it."""
    batch = random_packed_batch(model.config, batch_size=2, seed=seed)
    batch[field] = (batch[field] + shift).to(dtype)
    try:
        with torch.no_grad():
            loss = model(**batch).loss
    except (ValueError, TypeError) as error:
        assert field in str(error) or "modality" in str(error), error
        return
    assert torch.isfinite(loss)


# ---- configs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, error, message", [
    ("hidden_size", "128", TypeError, r"FourMConfig.hidden_size must be an integer >= 1, got '128'"),
    ("num_attention_heads", 0, ValueError, r"num_attention_heads must be an integer >= 1, got 0"),
    ("num_attention_heads", 1.5, TypeError, r"num_attention_heads must be an integer >= 1, got 1.5"),
    ("num_encoder_layers", "x", TypeError, r"num_encoder_layers must be an integer >= 1, got 'x'"),
    ("num_encoder_layers", 0, ValueError, r"num_encoder_layers must be an integer >= 1, got 0"),
    ("image_size", 0, ValueError, r"image_size must be an integer >= 1, got 0"),
    ("share_modality_embeddings", "oops", TypeError, r"share_modality_embeddings must be true or false, got 'oops'"),
    ("layer_norm_eps", float("nan"), ValueError, r"layer_norm_eps must be a finite number > 0"),
    ("input_modalities", "rgb", TypeError, r"input_modalities must be a list of modality names"),
])
def test_config_values_are_checked_at_construction_and_on_load(saved, tmp_path, field, value, error, message):
    with pytest.raises(error, match=message):
        FourMConfig(**{field: value})
    config = json.loads((saved / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
    (tmp_path / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    with pytest.raises(error, match=message):
        FourMModel.from_pretrained(tmp_path)


# ---- checkpoints ----------------------------------------------------------------------------------------
def _copy(saved, folder, weights=None):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text((saved / "config.json").read_text())
    if weights is None:
        (folder / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    else:
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_missing_and_unexpected_tensors_are_an_error_unless_asked_for(saved, tmp_path):
    weights = load_file(str(saved / "model.safetensors"))
    dropped = sorted(weights)[3]
    del weights[dropped]
    weights["extra.weight"] = torch.zeros(2)
    folder = _copy(saved, tmp_path / "partial", weights)
    with pytest.raises(ValueError, match=rf"1 tensors missing from the checkpoint.*{dropped}.*extra.weight.*output_loading_info=True"):
        FourMModel.from_pretrained(folder)
    model, info = FourMModel.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == {dropped} and info["unexpected_keys"] == {"extra.weight"}
    assert isinstance(model, FourMModel)


def test_a_complete_checkpoint_loads_silently_identical(model, saved):
    loaded = FourMModel.from_pretrained(saved)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_weights_file_is_named(saved, tmp_path, damage):
    folder = _copy(saved, tmp_path / damage)
    data = (saved / "model.safetensors").read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x07" * 64}[damage]
    (folder / "model.safetensors").write_bytes(damaged)
    with pytest.raises(ValueError, match=r"cannot read the weights file .*model\.safetensors.*truncated or corrupt"):
        FourMModel.from_pretrained(folder)


# ---- text inputs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processor():
    return FourMProcessor.from_pretrained(str(BUNDLED_CHECKPOINT))


def test_a_box_with_an_unknown_label_is_refused_not_unk(processor):
    box = {"label": "zzqxjunk", "box": [0.1, 0.1, 0.5, 0.5]}
    with pytest.raises(ValueError, match=r"det: box 0 label 'zzqxjunk' has a word the text tokenizer does not know"):
        processor.tokenizer.encode_boxes([box])
    known = processor.tokenizer.encode_boxes([{"label": "cube", "box": [0.1, 0.1, 0.5, 0.5]}])
    assert processor.tokenizer.unk_token_id not in known


@pytest.mark.parametrize("text", ["\x00\x00", "\u200b", " \x00 "])
def test_a_caption_of_invisible_characters_is_empty(processor, text):
    with pytest.raises(ValueError, match=r"caption: text .* has no characters the tokenizer keeps|caption: text is empty"):
        processor(text=text)
