"""transformers' own tokenizer test mixins (from the installed version's sdist) on FourMTextTokenizer.

TokenizerTesterMixin (every tokenizer) and TokenizersBackendTesterMixin (tokenizers backed by the
`tokenizers` library, as ours is) run on a tokenizer trained here with the reference layout (200
sentinels, 1000 coordinate bins, class names) and saved to a folder, which plays the Hub model id
the mixins load from. The integration tests compare with the raw `tokenizers` file of that folder:
``test_integration`` loads the folder through transformers, ``test_integration_from_extractor``
rebuilds the tokenizer from the file's vocabulary and added tokens (``FourMTextTokenizer(vocab=...)``).

Each common test that does not apply to 4M is skipped below with its reason (``SKIPPED``); all
others run. Two tests skip themselves inside the mixin: ``test_chat_template_save_loading`` (only
for tokenizers that take a ``chat_template`` argument; 4M has no chat format) and the parameterised
Hub round trips of TokenizersBackendTesterMixin are not collected (they download models).
"""

from __future__ import annotations

import shutil
import tempfile
import unittest

import tokenizers

from fourm_hf.text.tokenization_fourm import FourMTextTokenizer, train_text_tokenizer

from transformers_common import import_common

TokenizerTesterMixin = import_common("test_tokenization_common").TokenizerTesterMixin
TokenizersBackendTesterMixin = import_common("test_tokenizers_backend_mixin").TokenizersBackendTesterMixin

CLASS_NAMES = ["red cube", "blue sphere", "person", "wine glass"]

# Captions plus the sentences the common tests encode, so that most of their words are WordPieces.
CORPUS = [
    "a red cube to the left of a blue sphere",
    "a person holding a wine glass in front of a yellow cone",
    "two persons are standing behind a green cylinder on the floor",
    "He is very happy, UNwant\u00e9d,running",
    "Test this method. With these inputs.",
    "This is the first sentence. This is the second one.",
    "This sentence (contains #) over symbols and numbers 12 3. But not this one.",
    "Wonderful no inspiration example with subtoken. Along with an awesome pair.",
    "Hello world, how are you doing today? I was born in 92000, and this is fals\u00e9.",
    "the following string should be properly encoded: hello.",
]

SKIPPED = {
    "test_training_new_tokenizer_with_special_tokens_change": (
        "renames every special token ([PAD] -> [PAD]a, ...) while retraining; the 4M layout fixes the control "
        "tokens' text and ids, so the retrained tokenizer is refused with the layout error (retraining that keeps "
        "the special tokens runs in test_training_new_tokenizer)"
    ),
}


def save_trained_tokenizer() -> str:
    """A folder holding a tokenizer trained on CORPUS with the reference layout (the mixins' "model id")."""
    folder = tempfile.mkdtemp()
    train_text_tokenizer(CORPUS, vocab_size=400, class_names=CLASS_NAMES).save_pretrained(folder)
    return folder


class FourMTextTokenizerCommonTest(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class = FourMTextTokenizer
    from_pretrained_kwargs = {}

    @classmethod
    def setUpClass(cls):
        # The mixin's setUpClass loads `from_pretrained_id` from the Hub and reads a text fixture of the
        # transformers repository that the sdist lacks (and no test uses); this does the rest of it.
        cls.pretrained_folder = save_trained_tokenizer()
        cls.from_pretrained_id = [cls.pretrained_folder]
        cls.tokenizers_list = [(cls.tokenizer_class, cls.pretrained_folder, cls.from_pretrained_kwargs)]
        cls.tmpdirname = tempfile.mkdtemp()
        FourMTextTokenizer.from_pretrained(cls.pretrained_folder).save_pretrained(cls.tmpdirname)

        raw = tokenizers.Tokenizer.from_file(f"{cls.pretrained_folder}/tokenizer.json")
        encoding = raw.encode(cls.integration_test_input_string, add_special_tokens=False)
        cls.integration_expected_tokens = encoding.tokens
        cls.integration_expected_token_ids = encoding.ids
        cls.integration_expected_decoded_text = raw.decode(encoding.ids, skip_special_tokens=False)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pretrained_folder, ignore_errors=True)
        shutil.rmtree(cls.tmpdirname, ignore_errors=True)

    def test_conversion_reversible(self):
        # marked slow in transformers (a 30k vocabulary); ours has a few thousand ids, so it runs every time
        TokenizerTesterMixin.test_conversion_reversible.__wrapped__(self)

    def test_integration_data_is_not_trivial(self):
        # the integration tests above compare with these: real words, split into pieces, a few unknowns
        tokens = self.integration_expected_tokens
        self.assertIn("following", tokens)
        self.assertTrue(any(token.startswith("##") for token in tokens))
        self.assertIn("[UNK]", tokens)  # the emoji, Chinese and Thai of the mixin's string


class FourMTextTokenizerBackendCommonTest(TokenizersBackendTesterMixin, unittest.TestCase):
    tokenizer_class = FourMTextTokenizer
    from_pretrained_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.pretrained_folder = save_trained_tokenizer()
        cls.from_pretrained_id = [cls.pretrained_folder]
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.pretrained_folder, ignore_errors=True)

    def test_retraining_with_renamed_control_tokens_is_refused(self):
        tokenizer = self.get_rust_tokenizer()
        with self.assertRaisesRegex(ValueError, r"id 0 must be '\[PAD\]' \(4M layout\), found '<pad>'"):
            tokenizer.train_new_from_iterator(["a red cube"], 100, special_tokens_map={"[PAD]": "<pad>"})


def _skip_inapplicable(test_class):
    for name, reason in SKIPPED.items():
        if hasattr(test_class, name):
            setattr(test_class, name, unittest.skip(reason)(lambda self: None))


_skip_inapplicable(FourMTextTokenizerCommonTest)
_skip_inapplicable(FourMTextTokenizerBackendCommonTest)
