"""transformers' own ConfigTester (from the installed version's sdist) on FourMConfig."""

from __future__ import annotations

import unittest

from fourm_hf import FourMConfig

from transformers_common import import_common

ConfigTester = import_common("test_configuration_common").ConfigTester


class FourMConfigCommonTest(unittest.TestCase):
    def test_config(self):
        # has_text_modality=False: 4M has one vocabulary per modality (config.modality(name).vocab_size),
        # no single vocab_size; num_hidden_layers comes from attribute_map.
        tester = ConfigTester(
            self, config_class=FourMConfig, has_text_modality=False,
            hidden_size=64, num_encoder_layers=2, num_decoder_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8,
        )
        tester.run_common_tests()

    def test_config_of_a_preset(self):
        tester = ConfigTester(self, config_class=FourMConfig, has_text_modality=False, **FourMConfig.from_preset("small").to_diff_dict())
        tester.run_common_tests()
