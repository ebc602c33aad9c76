"""transformers' own ModelTesterMixin (from the installed version's sdist) on FourMModel and the task heads.

Each common test that does not apply to 4M is skipped below with its reason; all others run.
"""

from __future__ import annotations

import unittest

import pytest
import torch

from fourm_hf import FourMForDepthEstimation, FourMForImageClassification, FourMForSemanticSegmentation, FourMModel
from fourm_hf.testing_utils import random_packed_batch, tiny_config

from transformers_common import import_common

common = import_common("test_modeling_common")
ModelTesterMixin = common.ModelTesterMixin


class FourMModelTester:
    """Tiny configs and inputs in the shape ModelTesterMixin expects (``prepare_config_and_inputs_for_common``)."""

    def __init__(self, parent, heads: bool = False):
        self.parent = parent
        self.heads = heads
        self.batch_size = 2
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.image_size = 32
        self.patch_size = 8
        self.num_labels = 3
        self.seq_length = 16 if heads else 10  # heads: the 4x4 patch grid; model: the input budget
        self.encoder_seq_length = self.seq_length
        self.decoder_seq_length = 8
        self.key_length = self.seq_length
        self.is_training = True

    def get_config(self):
        # the heads read only the pixels and run no decoder: a config without the token modalities and
        # without decoder layers keeps them small (is_encoder_decoder is not set here: FourMConfig derives it)
        modalities = dict(input_modalities=["rgb"], output_modalities=["tok_depth"]) if self.heads else {}
        return tiny_config(
            **modalities, hidden_size=self.hidden_size, num_encoder_layers=self.num_hidden_layers,
            num_decoder_layers=0 if self.heads else self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            image_size=self.image_size, patch_size=self.patch_size, num_labels=self.num_labels,
            input_budget=self.seq_length, target_budget=self.decoder_seq_length,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        if self.heads:
            pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size)
            return config, {"pixel_values": pixel_values}
        batch = random_packed_batch(config, self.batch_size, self.seq_length, self.decoder_seq_length, seed=0, full=True)
        self.labels = batch.pop("labels")
        return config, batch

    def labels_for(self, model_class) -> torch.Tensor:
        """What ``_prepare_for_class(return_labels=True)`` adds: each class's own label format."""
        grid = (self.batch_size, self.image_size, self.image_size)
        generator = torch.Generator().manual_seed(0)  # the same labels at every call (tuple vs dict tests)
        if model_class is FourMModel:
            return self.labels.clone()
        if model_class is FourMForImageClassification:
            return torch.randint(0, self.num_labels, (self.batch_size,), generator=generator)
        if model_class is FourMForDepthEstimation:
            return torch.rand(grid, generator=generator) + 0.5
        return torch.randint(0, self.num_labels, grid, generator=generator)


NO_EMBEDDING_TABLE = "4M has one token table per modality (and the heads read pixels): no single input-embedding table"
FIRST_OUTPUT_IS_A_DICT = (
    "without labels outputs[0] is the dict of per-modality logits (4M predicts several vocabularies), not a tensor; "
    "determinism and gradients through every output are covered by test_modeling.py and test_transformers_conventions.py"
)


class FourMCommonTestMixin(ModelTesterMixin):
    test_resize_embeddings = False  # NO_EMBEDDING_TABLE
    test_torch_exportable = False

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels:
            inputs_dict["labels"] = self.model_tester.labels_for(model_class)
        return inputs_dict

    @pytest.mark.skip(reason=NO_EMBEDDING_TABLE)
    def test_model_get_set_embeddings(self):
        pass


class FourMModelCommonTest(FourMCommonTestMixin, unittest.TestCase):
    all_model_classes = (FourMModel,)
    is_encoder_decoder = True

    def setUp(self):
        self.model_tester = FourMModelTester(self)

    @pytest.mark.skip(reason=(
        "counts 5 fields in a seq2seq output with attentions (Seq2SeqModelOutput: last_hidden_state, or Seq2SeqLMOutput: "
        "logits; then decoder/cross/encoder attentions and encoder_last_hidden_state). FourMModel keeps the standard "
        "names and adds decoder_last_hidden_state beside its per-modality logits (the reference's decoder output, "
        "which the parity tests compare), so it returns 6; the attention tuples' counts and shapes this test checks "
        "are checked in test_transformers_conventions.py"
    ))
    def test_attention_outputs(self):
        pass

    @pytest.mark.skip(reason=FIRST_OUTPUT_IS_A_DICT)
    def test_determinism(self):
        pass

    @pytest.mark.skip(reason=FIRST_OUTPUT_IS_A_DICT)
    def test_retain_grad_hidden_states_attentions(self):
        pass



EAGER_MATCHES_SDPA_NEEDS_TOKEN_IDS = (
    "builds its inputs from input_ids and an attention mask alone; FourMModel needs packed modality ids and "
    "positions. SDPA against eager (outputs and attention weights) is tested in test_transformers_conventions.py"
)


def _skipped_eager_matches_sdpa(self):
    """Stands in for transformers' parametrized test_eager_matches_sdpa_inference_* (skipped, reason above)."""


# a named function, not a lambda: pytest.mark.skip(...)(lambda) would store the lambda as a mark argument
# and leave an unmarked attribute that runs as an empty passing test
for _name in [name for name in dir(FourMModelCommonTest) if name.startswith("test_eager_matches_sdpa_inference")]:
    setattr(FourMModelCommonTest, _name, pytest.mark.skip(reason=EAGER_MATCHES_SDPA_NEEDS_TOKEN_IDS)(_skipped_eager_matches_sdpa))


class FourMHeadsCommonTest(FourMCommonTestMixin, unittest.TestCase):
    all_model_classes = (FourMForImageClassification, FourMForDepthEstimation, FourMForSemanticSegmentation)
    is_encoder_decoder = False

    def setUp(self):
        self.model_tester = FourMModelTester(self, heads=True)
