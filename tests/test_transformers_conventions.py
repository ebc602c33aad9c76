"""transformers' conventions on FourMModel and the task heads: dtype at load, the config's output flags,
attention weights, the tuple form, encoder-only heads, problem types, attribute_map."""

from __future__ import annotations

import pytest
import torch

from fourm_hf import FourMConfig, FourMForDepthEstimation, FourMForImageClassification, FourMModel
from fourm_hf.modeling.modeling_fourm_heads import FourMEncoderTrunk
from fourm_hf.testing_utils import random_packed_batch


def tiny_config(**kwargs) -> FourMConfig:
    sizes = dict(hidden_size=32, num_encoder_layers=2, num_decoder_layers=2, num_attention_heads=2, image_size=32, patch_size=16)
    sizes.update(kwargs)
    return FourMConfig(**sizes)


@pytest.fixture(scope="module")
def batch():
    return random_packed_batch(tiny_config(), batch_size=2, input_budget=8, target_budget=8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_load_then_forward(tmp_path, batch, dtype):
    FourMModel(tiny_config()).save_pretrained(tmp_path)
    for model in (FourMModel.from_pretrained(tmp_path, dtype=dtype), FourMModel._from_config(tiny_config(), dtype=dtype)):
        assert {buffer.dtype for buffer in model.buffers()} == {dtype}  # sin-cos tables follow the model
        output = model(**batch)
        assert output.encoder_last_hidden_state.dtype == dtype
        assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    assert FourMModel.from_pretrained(tmp_path).encoder_embeddings["rgb"].pos_emb.dtype == torch.float32


def test_config_output_flags_are_honoured(batch):
    model = FourMModel(tiny_config(output_hidden_states=True, output_attentions=True)).eval()
    output = model(**batch)
    assert len(output.encoder_hidden_states) == len(output.decoder_hidden_states) == 3  # embeddings + 2 blocks
    assert [tuple(a.shape) for a in output.encoder_attentions] == [(2, 2, 8, 8)] * 2
    assert [tuple(a.shape) for a in output.cross_attentions] == [(2, 2, 8, 8)] * 2
    assert model(**batch, output_hidden_states=False).encoder_hidden_states is None
    model.config.output_attentions = False
    assert model(**batch).decoder_attentions is None


def test_attention_weights_are_the_same_with_sdpa_and_eager(batch):
    sdpa = FourMModel(tiny_config()).eval()
    eager = FourMModel._from_config(tiny_config(), attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        a, b = sdpa(**batch, output_attentions=True), eager(**batch, output_attentions=True)
    torch.testing.assert_close(a.loss, b.loss)
    for x, y in zip(a.decoder_attentions + a.encoder_attentions, b.decoder_attentions + b.encoder_attentions):
        torch.testing.assert_close(x, y)
        torch.testing.assert_close(x.sum(-1), torch.ones_like(x.sum(-1)))


def test_return_dict_false_starts_with_the_loss(batch):
    model = FourMModel(tiny_config()).eval()
    with torch.no_grad():
        as_tuple, as_dict = model(**batch, return_dict=False), model(**batch)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    model.config.return_dict = False
    assert isinstance(model(**batch), tuple)


def test_is_encoder_decoder_follows_the_model_class_without_changing_the_callers_config():
    shared = tiny_config()
    assert shared.is_encoder_decoder is True  # decoder layers: the 4M encoder-decoder
    head = FourMForDepthEstimation(shared)
    model = FourMModel(shared)
    assert shared.is_encoder_decoder is True and model.config is shared
    assert head.config.is_encoder_decoder is False and head.fourm.config is head.config
    encoder_only = tiny_config(num_decoder_layers=0)
    assert encoder_only.is_encoder_decoder is False
    assert FourMForDepthEstimation(encoder_only).config is encoder_only
    assert FourMModel(encoder_only).config.is_encoder_decoder is True and encoder_only.is_encoder_decoder is False
    assert tiny_config(num_decoder_layers=0, is_encoder_decoder=True).is_encoder_decoder is True  # explicit wins


def test_heads_are_encoder_only_with_a_pretrained_base_model(tmp_path):
    head = FourMForDepthEstimation(tiny_config())
    assert head.config.is_encoder_decoder is False and FourMModel(tiny_config()).config.is_encoder_decoder is True
    assert isinstance(head.base_model, FourMEncoderTrunk)
    head.base_model.save_pretrained(tmp_path)
    reloaded = FourMEncoderTrunk.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.encoder_norm.weight, head.fourm.encoder_norm.weight)
    pixels = torch.randn(1, 3, 32, 32)
    output = head(pixels, output_attentions=True, output_hidden_states=True)
    assert len(output.attentions) == 2 and len(output.hidden_states) == 3


@pytest.mark.parametrize(
    "problem_type, labels, loss_name",
    [
        (None, torch.tensor([0, 2]), "NllLoss"),
        ("single_label_classification", torch.tensor([1, 1]), "NllLoss"),
        (None, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), "BinaryCrossEntropyWithLogits"),
        ("multi_label_classification", torch.tensor([[1, 0, 1], [0, 0, 1]]), "BinaryCrossEntropyWithLogits"),
        ("regression", torch.rand(2, 3), "MseLoss"),
    ],
)
def test_image_classification_follows_problem_type(problem_type, labels, loss_name):
    head = FourMForImageClassification(tiny_config(num_labels=3, problem_type=problem_type))
    loss = head(torch.randn(2, 3, 32, 32), labels=labels).loss
    assert loss_name in type(loss.grad_fn).__name__ and torch.isfinite(loss)
    assert head.config.problem_type is not None


def test_image_classification_regression_with_one_label_and_bad_labels():
    head = FourMForImageClassification(tiny_config(num_labels=1))
    assert "MseLoss" in type(head(torch.randn(2, 3, 32, 32), labels=torch.rand(2)).loss.grad_fn).__name__
    with pytest.raises(ValueError, match="regression labels must be a float tensor"):
        head(torch.randn(2, 3, 32, 32), labels=torch.rand(2, 4))
    head = FourMForImageClassification(tiny_config(num_labels=3, problem_type="not-a-problem"))
    with pytest.raises(ValueError, match="problem_type must be one of"):
        head(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1]))


def test_num_hidden_layers_maps_to_the_encoder_depth():
    config = tiny_config(num_hidden_layers=3)
    assert config.num_encoder_layers == 3 and config.num_hidden_layers == 3
    config.num_hidden_layers = 4
    assert config.num_encoder_layers == 4
    assert FourMConfig.from_dict(config.to_dict()).num_hidden_layers == 4
