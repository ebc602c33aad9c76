"""transformers' own ProcessorTesterMixin (from the installed version's sdist) on FourMProcessor.

Two processors run the mixin: one of an image processor and a text tokenizer only (pixels and
captions), and one that also owns an RGB VQ-VAE (``tok_rgb`` from ``images=``), saved and loaded
under ``vqvae/tok_rgb/``. Each common test that does not apply to 4M is skipped below with its
reason (``SKIPPED``); tests that run with another input than the mixin's are listed with the
reason in ``ADAPTED``; all others run unchanged.
"""

from __future__ import annotations

import unittest
from unittest import mock

import pytest

from fourm_hf.data.scenes import SCENE_CLASSES, render_scene
from fourm_hf.testing_utils import tiny_vqvae
from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.text.tokenization_fourm import train_text_tokenizer

from transformers_common import import_common

common = import_common("test_processing_common")

SIZE, PATCH = 32, 8
# The mixin's texts ("lower newer", "upper older longer string") are in the vocabulary, so they
# are WordPieces rather than [UNK].
EXTRA_TEXT = "lower newer upper older longer string"

SAMPLE_WITHOUT_AN_IMAGE = (
    "after a call with one list of images per sample ([[image], [image], [image]], accepted: test_processor.py "
    "checks it equals the flat list), it calls with a sample that has no image ([[], [image], [image]]). A 4M "
    "token dict holds one dense (B, ...) array per modality (pixel_values, tok_rgb), with no per-sample absence, "
    "and FourMModel generation reads every sample's pixels; so a sample without its image is a ValueError naming "
    "it (the any-to-any pipeline groups samples by their modality set instead)"
)
VQVAES_ARE_MODELS = (
    "expects every __init__ option in processor_config.json as passed; vqvaes are models, saved as their own "
    "folders (vqvae/<modality>/) and listed by name as vqvae_modalities"
)
SKIPPED = {
    "test_processor_text_has_no_visual": SAMPLE_WITHOUT_AN_IMAGE,
}
SKIPPED_WITH_VQVAE = {**SKIPPED, "test_processor_to_json_string": VQVAES_ARE_MODELS}

# The mixin marks "image options reach the image processor" with rescale_factor=-1.0 (negative
# pixels). FourMImageProcessor rejects a non-positive rescale_factor with a ValueError, so these
# tests run with a positive factor that has the same visible effect: pixels rescaled to ~0 and
# then ImageNet-normalised are negative, which the mixin's check (mean of channel 0 <= 0) reads.
POSITIVE_RESCALE_MARKER = {"do_rescale": True, "rescale_factor": 1e-6}
RESCALE_FACTOR_MUST_BE_POSITIVE = (
    "run with images init_time_kwargs do_rescale=True, rescale_factor=1e-6 instead of -1.0: FourMImageProcessor "
    "rejects rescale_factor <= 0; the check (kwargs reach the image processor and make channel 0 negative) is the same"
)
ADAPTED = {
    "test_subprocessor_defaults_preserved_by_kwargs_0_images": RESCALE_FACTOR_MUST_BE_POSITIVE,
    "test_kwargs_overrides_default_subprocessor_kwargs_0_images": RESCALE_FACTOR_MUST_BE_POSITIVE,
    "test_unstructured_kwargs_0_images": RESCALE_FACTOR_MUST_BE_POSITIVE,
    "test_unstructured_kwargs_batched_0_images": RESCALE_FACTOR_MUST_BE_POSITIVE,
    "test_structured_kwargs_nested_from_dict_0_images": RESCALE_FACTOR_MUST_BE_POSITIVE,
}


def _text_tokenizer():
    scenes = [render_scene(seed, 48) for seed in range(3)]
    labels = sorted({box["label"] for scene in scenes for box in scene["boxes"]})
    return train_text_tokenizer([scene["caption"] for scene in scenes] + [EXTRA_TEXT], vocab_size=200,
                                class_names=labels, num_sentinels=16, coord_bins=64)


class FourMProcessorCommonTest(common.ProcessorTesterMixin, unittest.TestCase):
    processor_class = FourMProcessor
    text_input_name = "caption"
    images_input_name = "pixel_values"

    @classmethod
    def _setup_image_processor(cls):
        return FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES))

    @classmethod
    def _setup_tokenizer(cls):
        return _text_tokenizer()

    @staticmethod
    def prepare_processor_dict():
        return {"max_text_length": 64}


class FourMProcessorWithVQVAECommonTest(FourMProcessorCommonTest):
    @staticmethod
    def prepare_processor_dict():
        return {"max_text_length": 64, "vqvaes": {"tok_rgb": tiny_vqvae("rgb", image_size=SIZE, patch_size=PATCH)}}


def _skip(reason: str):
    # a named function: pytest.mark.skip(...)(lambda self: None) would not mark a lambda, it would
    # return the MarkDecorator itself as the "test", which unittest then runs as a passing call
    @pytest.mark.skip(reason=reason)
    def skipped(self):
        pass

    return skipped


def _with_marker(test):
    def adapted(self):
        with mock.patch.dict(common.MODALITY_TEST_SPECS["images"], {"init_time_kwargs": POSITIVE_RESCALE_MARKER}):
            test(self)

    return adapted


def _apply(test_class, skipped: dict) -> None:
    for name, reason in skipped.items():
        assert hasattr(test_class, name), f"{name} is not a common test of this transformers version"
        setattr(test_class, name, _skip(reason))
    for name in ADAPTED:
        assert hasattr(test_class, name), f"{name} is not a common test of this transformers version"
        setattr(test_class, name, _with_marker(getattr(common.ProcessorTesterMixin, name)))


_apply(FourMProcessorCommonTest, SKIPPED)
_apply(FourMProcessorWithVQVAECommonTest, SKIPPED_WITH_VQVAE)
