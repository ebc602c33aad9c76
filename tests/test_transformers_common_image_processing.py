"""transformers' own ImageProcessingTestMixin (from the installed version's sdist) on FourMImageProcessor.

Each common test that does not apply to 4M is skipped below with its reason (``SKIPPED``); all others run.
"""

from __future__ import annotations

import unittest

import pytest

from fourm_hf import FourMImageProcessor

from transformers_common import import_common

common = import_common("test_image_processing_common")


class FourMImageProcessingTester(common.ImageProcessingTester):
    """Non-default settings (so that the attribute / save-load tests see them) and the output shape.

    transformers finds a model's image processor classes from the folder its test file lives in
    (``tests/models/<model_type>/``); ours lives in ``tests/``, so the backends are named here: the
    one PIL/numpy backend that ``fourm_hf`` registers with AutoImageProcessor.
    """

    def __init__(self, parent, **kwargs):
        kwargs.setdefault("batch_size", 5)
        kwargs.setdefault("min_resolution", 20)
        kwargs.setdefault("max_resolution", 60)
        kwargs.setdefault("image_size", 18)
        kwargs.setdefault("rgb_resample", "bilinear")
        kwargs.setdefault("depth_resample", "nearest")
        kwargs.setdefault("image_mean", [0.5, 0.5, 0.5])
        kwargs.setdefault("image_std", [0.25, 0.5, 0.75])
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("do_rescale", True)
        kwargs.setdefault("rescale_factor", 1 / 255)
        kwargs.setdefault("crop_scale", [0.5, 1.0])
        kwargs.setdefault("crop_ratio", [0.5, 2.0])
        kwargs.setdefault("flip_probability", 0.0)  # > 0 needs generator= at every call (4M: reproducible flips)
        kwargs.setdefault("num_semseg_classes", 19)
        kwargs.setdefault("semseg_ignore_index", 255)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        return {"pil": FourMImageProcessor}

    def expected_output_image_shape(self, images):
        """Every sample is cropped and resized to image_size x image_size, whatever its size."""
        return 3, self.image_size, self.image_size


RGB_ONLY = (
    "feeds a 4-channel image with do_convert_rgb=False and 4-value image_mean/std, expecting 4 output channels; "
    "4M's pixel input (and its RGB tokenizer) is 3-channel RGB, so FourMImageProcessor accepts 3-value "
    "mean/std only and turns other channel counts into RGB (do_convert_rgb) or rejects them"
)
NO_TORCHVISION_BACKEND = (
    "FourMImageProcessor is a PIL/numpy processor (fourm_hf does not depend on torchvision); the shared "
    "crop, valid-pixel depth resampling and id-preserving segmentation resizing are one code path, and a "
    "second torchvision implementation would have to reproduce them pixel for pixel"
)
# Skipped by the mixin itself, with its own reason: the backend-equivalence and cross-backend save/load tests
# (one backend), the torchvision-only tests, the slow ones, test_image_processor_preprocess_arguments (it checks
# transformers' warn-and-ignore of unknown kwargs; FourMImageProcessor raises TypeError naming them, tested in
# test_image_processing.py) and test_override_instance_attributes_does_not_affect_other_instances (needs a dict
# `size`; 4M has one int `image_size`).
SKIPPED = {
    "test_call_numpy_4_channels": RGB_ONLY,
    "test_new_models_require_torchvision_backend": NO_TORCHVISION_BACKEND,
}


class FourMImageProcessingCommonTest(common.ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = FourMImageProcessingTester
    test_cast_dtype = True  # runs test_cast_dtype_device (BatchFeature.to on our outputs)

    def test_common_tests_see_the_processor(self):
        """The mixin's tests loop over image_processing_classes and skip the RGB conversion test for a class
        without a class-level do_convert_rgb: neither may silently leave FourMImageProcessor out."""
        self.assertEqual(list(self.image_processing_classes.values()), [FourMImageProcessor])
        self.assertTrue(FourMImageProcessor.do_convert_rgb)
        settings = self.image_processor_dict
        self.assertEqual(settings["image_size"], 18)  # non-default values reach the attribute tests
        self.assertEqual(settings["image_std"], [0.25, 0.5, 0.75])


def _skipped(name: str, reason: str):
    """A named stand-in test marked skip (a mark applied to a lambda takes it as an argument instead)."""

    def test(self):
        pass

    test.__name__ = test.__qualname__ = name
    return pytest.mark.skip(reason=reason)(test)


for _name, _reason in SKIPPED.items():
    assert hasattr(FourMImageProcessingCommonTest, _name), f"{_name} is not a common test of this transformers version"
    setattr(FourMImageProcessingCommonTest, _name, _skipped(_name, _reason))
