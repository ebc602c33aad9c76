"""The 4M text tokenizer: reference layout, training, save/load through AutoTokenizer, boxes <-> text."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fourm_hf.text.tokenization_fourm import (
    FourMTextTokenizer,
    boxes_to_text,
    coordinate_to_bin,
    text_to_boxes,
    train_text_tokenizer,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE_FILE = SHARED / "fixtures" / "ml4m" / "text_tokenizer_4m_wordpiece_30k.json"

CLASS_NAMES = ["red cube", "blue sphere", "green cylinder", "wine glass"]
COLORS = ["red", "blue", "green", "yellow", "purple"]
SHAPES = ["cube", "sphere", "cylinder", "cone"]
RELATIONS = ["to the left of", "to the right of", "behind", "in front of"]


def synthetic_captions(count=48):
    rng = np.random.default_rng(0)
    captions = []
    for _ in range(count):
        first = f"{rng.choice(COLORS)} {rng.choice(SHAPES)}"
        second = f"{rng.choice(COLORS)} {rng.choice(SHAPES)}"
        captions.append(f"a {first} {rng.choice(RELATIONS)} a {second}")
    return captions


SAMPLE_TEXTS = [
    "a red cube to the left of a blue sphere",
    "A Red Cube, behind a GREEN cylinder!",
    "v0=12 v1=30 v2=400 v3=999 red cube v0=0 v1=0 v2=1 v3=1 wine glass",
    "[S_0] a red [S_1] sphere [EOS]",
    "a wine glass in front of a yellow cone",
]


@pytest.fixture(scope="module")
def trained():
    return train_text_tokenizer(synthetic_captions(), vocab_size=512, class_names=CLASS_NAMES)


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE_FILE.is_file():
        pytest.skip(f"reference tokenizer file not found at {REFERENCE_FILE} (../shared absent)")
    return FourMTextTokenizer(tokenizer_file=str(REFERENCE_FILE))


# ----- the reference file -----


def test_reference_file_loads_unchanged_with_identical_ids(reference):
    import tokenizers

    raw = tokenizers.Tokenizer.from_file(str(REFERENCE_FILE))
    texts = SAMPLE_TEXTS + [
        "A photo of a Wine Glass next to a dog and a baseball bat.",
        "v0=5 v1=6 v2=700 v3=800 person v0=10 v1=20 v2=30 v3=40 hot dog",
        "[S_1] a cat [S_2] on a mat [S_199]",
        "naïve café, 123 unbelievably-long_words",
        "",
    ]
    for text in texts:
        assert reference(text)["input_ids"] == raw.encode(text).ids, text
    assert len(reference) == 30000
    assert (reference.num_sentinels, reference.coord_bins, len(reference.class_names)) == (200, 1000, 80)
    assert reference.first_wordpiece_id == 4284
    assert reference.class_names[0] == "airplane" and reference.class_names[-1] == "zebra"
    assert reference.convert_tokens_to_ids("wine glass") == 4282
    assert reference("wine glass")["input_ids"] == [4282]
    assert reference.coordinate_token_id(0, 0) == 204 and reference.coordinate_token_id(3, 999) == 4203
    assert reference.sentinel_token_id(199) == 203


def test_reference_decode_keeps_coordinates_and_class_names(reference):
    text = "v0=12 v1=30 v2=400 v3=999 wine glass"
    ids = [reference.bos_token_id, reference.sentinel_token_id(1)] + reference(text)["input_ids"]
    ids += [reference.eos_token_id, reference.pad_token_id, reference.pad_token_id]
    assert reference.decode(ids, skip_special_tokens=True) == text
    assert reference.decode_text(ids) == text
    assert reference.decode_text(ids, keep_sentinels=True) == "[S_1] " + text
    assert reference.decode(ids) == f"[SOS] [S_1] {text} [EOS] [PAD] [PAD]"
    assert reference.decode_boxes(ids) == [{"label": "wine glass", "box": [12 / 999, 30 / 999, 400 / 999, 1.0]}]


# ----- layout and training -----


def test_trained_tokenizer_has_the_4m_id_layout(trained):
    assert [trained.convert_tokens_to_ids(t) for t in ["[PAD]", "[UNK]", "[SOS]", "[EOS]"]] == [0, 1, 2, 3]
    assert (trained.pad_token_id, trained.unk_token_id, trained.sos_token_id, trained.eos_token_id) == (0, 1, 2, 3)
    assert trained.num_sentinels == 200 and trained.coord_bins == 1000
    assert trained.convert_tokens_to_ids("[S_0]") == 4 == trained.sentinel_token_id(0)
    assert trained.convert_tokens_to_ids("[S_199]") == 203
    assert trained.convert_tokens_to_ids("v0=0") == 204
    assert trained.convert_tokens_to_ids("v1=0") == 1204
    assert trained.convert_tokens_to_ids("v3=999") == 4203
    assert trained.class_names == CLASS_NAMES
    assert [trained.convert_tokens_to_ids(name) for name in CLASS_NAMES] == [4204, 4205, 4206, 4207]
    assert trained.first_wordpiece_id == 4208
    assert 4208 < len(trained) <= 4208 + 512
    assert trained.is_sentinel(4) and trained.is_sentinel(203) and not trained.is_sentinel(204)
    assert not trained.is_sentinel(3)
    assert trained.is_coordinate(204) and trained.is_coordinate(4203) and not trained.is_coordinate(4204)


def test_trained_tokenizer_encodes_the_corpus_without_unknowns(trained):
    for caption in synthetic_captions():
        ids = trained(caption)["input_ids"]
        assert trained.unk_token_id not in ids, caption
        assert all(i >= trained.first_wordpiece_id or i in range(4204, 4208) for i in ids)
        assert trained.decode(ids, skip_special_tokens=True) == caption
    # class names are single ids, matched after lower-casing, as whole words only
    assert trained("A RED CUBE")["input_ids"] == [trained.convert_tokens_to_ids("a"), 4204]
    assert 4204 not in trained("a red cubes")["input_ids"]


def test_training_small_layouts_and_vocab_sizes():
    captions = synthetic_captions()
    small = train_text_tokenizer(captions, vocab_size=40, num_sentinels=8, coord_bins=16)
    assert (small.num_sentinels, small.coord_bins, small.class_names) == (8, 16, [])
    assert small.first_wordpiece_id == 4 + 8 + 4 * 16
    assert len(small) <= small.first_wordpiece_id + 40
    large = train_text_tokenizer(captions, vocab_size=2000, num_sentinels=8, coord_bins=16)
    assert len(large) > len(small)
    assert small.convert_tokens_to_ids("v3=15") == 4 + 8 + 4 * 16 - 1


def test_encode_for_model_appends_eos(trained):
    ids = trained.encode_for_model("a red cube")
    assert ids == trained("a red cube")["input_ids"] + [3]
    assert trained.encode_boxes([]) == [3]
    boxes = [{"label": "red cube", "box": [0.1, 0.2, 0.3, 0.4]}]
    assert trained.encode_boxes(boxes) == [304, 1404, 2504, 3604, 4204, 3]


# ----- save / load -----


def _fingerprint(tokenizer):
    return {
        "class": type(tokenizer).__name__,
        "ids": [tokenizer(text)["input_ids"] for text in SAMPLE_TEXTS],
        "special": tokenizer.special_tokens_map,
        "special_ids": [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id],
        "layout": [tokenizer.num_sentinels, tokenizer.coord_bins, tokenizer.class_names, tokenizer.first_wordpiece_id],
        "size": len(tokenizer),
        "decoded": tokenizer.decode(tokenizer(SAMPLE_TEXTS[2])["input_ids"], skip_special_tokens=True),
    }


def test_save_and_load_through_auto_tokenizer(trained, tmp_path):
    import fourm_hf  # noqa: F401  (registers FourMTextTokenizer with AutoTokenizer)
    from transformers import AutoTokenizer

    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "FourMTextTokenizer"
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is FourMTextTokenizer
    assert _fingerprint(loaded) == _fingerprint(trained)
    assert loaded.get_vocab() == trained.get_vocab()
    # saving again gives the same files
    loaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (tmp_path / "tokenizer.json").read_text()


def test_load_in_a_fresh_process(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    script = (
        "import json, sys, fourm_hf\n"
        "from transformers import AutoTokenizer\n"
        "from tests_fingerprint import fingerprint\n"
        "print(json.dumps(fingerprint(AutoTokenizer.from_pretrained(sys.argv[1]))))\n"
    )
    helper = tmp_path / "helper"
    helper.mkdir()
    (helper / "tests_fingerprint.py").write_text(
        f"SAMPLE_TEXTS = {SAMPLE_TEXTS!r}\n" + _fingerprint_source()
    )
    env = dict(os.environ, PYTHONPATH=str(helper) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    expected = json.loads(json.dumps(_fingerprint(trained)))
    assert fresh == expected


def _fingerprint_source():
    import inspect

    return inspect.getsource(_fingerprint).replace("def _fingerprint(", "def fingerprint(")


def test_constructor_needs_a_layout_file(tmp_path):
    with pytest.raises(ValueError, match="tokenizer_file"):
        FourMTextTokenizer()
    with pytest.raises(ValueError, match="not a file"):
        FourMTextTokenizer(tokenizer_file=str(tmp_path / "missing.json"))
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    wrong = Tokenizer(WordPiece({"[UNK]": 0, "[PAD]": 1, "a": 2}, unk_token="[UNK]"))
    wrong.save(str(tmp_path / "wrong.json"))
    with pytest.raises(ValueError, match="id 0 must be '\\[PAD\\]'"):
        FourMTextTokenizer(tokenizer_file=str(tmp_path / "wrong.json"))


# ----- built from a vocabulary -----


def _vocab_of(tokenizer):
    return dict(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))


def test_reference_vocab_builds_the_reference_tokenizer(reference):
    vocab = json.loads(REFERENCE_FILE.read_text())["model"]["vocab"]
    built = FourMTextTokenizer(vocab=vocab, class_names=reference.class_names)
    assert built.backend_tokenizer.to_str() == reference.backend_tokenizer.to_str()
    assert _fingerprint(built) == _fingerprint(reference)


def test_vocab_dict_and_vocab_file_give_the_same_tokenizer(trained, tmp_path):
    vocab = _vocab_of(trained)
    (tmp_path / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    for built in [
        FourMTextTokenizer(vocab=vocab, class_names=CLASS_NAMES),
        FourMTextTokenizer(vocab_file=str(tmp_path / "vocab.txt"), class_names=CLASS_NAMES),
        FourMTextTokenizer(str(tmp_path / "vocab.txt"), class_names=CLASS_NAMES),
        # a saved tokenizer's added tokens mark the class names instead
        FourMTextTokenizer(vocab=vocab, added_tokens_decoder=trained.added_tokens_decoder),
    ]:
        assert built.backend_tokenizer.to_str() == trained.backend_tokenizer.to_str()
        assert _fingerprint(built) == _fingerprint(trained)
    built.save_pretrained(tmp_path / "saved")
    assert _fingerprint(FourMTextTokenizer.from_pretrained(tmp_path / "saved")) == _fingerprint(trained)


def _small_vocab(**replace):
    """The vocab of a tiny layout (2 sentinels, 2 bins, class 'wine glass'), with ``replace`` id -> token."""
    tokens = ["[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]", "[S_1]", "v0=0", "v0=1", "v1=0", "v1=1", "v2=0",
              "v2=1", "v3=0", "v3=1", "wine glass", "a", "b", "##b"]
    for index, token in replace.items():
        tokens[int(index[1:])] = token
    return {token: index for index, token in enumerate(tokens)}


def test_small_vocab_layout_and_ids():
    tokenizer = FourMTextTokenizer(vocab=_small_vocab(), class_names=["Wine  Glass"])
    assert (tokenizer.num_sentinels, tokenizer.coord_bins, tokenizer.class_names) == (2, 2, ["wine glass"])
    assert tokenizer.first_wordpiece_id == 15
    assert tokenizer("v0=1 v3=0 A Wine Glass ab [S_1] c")["input_ids"] == [7, 12, 15, 14, 15, 17, 5, 1]


@pytest.mark.parametrize(
    "vocab, class_names, error, message",
    [
        (_small_vocab(i0="[UNK]", i1="[PAD]"), ["wine glass"], ValueError, "vocab: id 0 must be '\\[PAD\\]'"),
        (_small_vocab(i4="[S_1]", i5="[S_0]"), ["wine glass"], ValueError, "id 4 must be the first sentinel"),
        (_small_vocab(i6="v1=0", i8="v0=0"), ["wine glass"], ValueError, "ids from 6 .* must be coordinate tokens"),
        (_small_vocab(i11="v3=1", i13="v2=1"), ["wine glass"], ValueError, "id 11 must be 'v2=1'"),
        (_small_vocab(), None, ValueError, "'wine glass' at id 14 is no WordPiece"),
        (_small_vocab(), ["red cube"], ValueError, "class name 0 'red cube' must be at id 14"),
        ({"[PAD]": 0, "[UNK]": 1, "[SOS]": 2, "[EOS]": 4}, None, ValueError, "id 3 is missing"),
        ({"[PAD]": 0, "[UNK]": 0}, None, ValueError, "gives id 0 to both"),
        ({"[PAD]": "0"}, None, TypeError, "str -> int"),
        ({}, None, TypeError, "non-empty dict"),
    ],
)
def test_vocab_that_breaks_the_layout_is_refused(vocab, class_names, error, message):
    with pytest.raises(error, match=message):
        FourMTextTokenizer(vocab=vocab, class_names=class_names)


def test_bad_vocab_sources(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="one source of its vocabulary, got vocab and tokenizer_file"):
        FourMTextTokenizer(vocab=_small_vocab(), tokenizer_file=str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="vocab file .*missing.txt' is not a file"):
        FourMTextTokenizer(vocab_file=str(tmp_path / "missing.txt"))
    (tmp_path / "twice.txt").write_text("[PAD]\n[UNK]\n[PAD]\n")
    with pytest.raises(ValueError, match="token '\\[PAD\\]' on lines 1 and 3"):
        FourMTextTokenizer(vocab_file=str(tmp_path / "twice.txt"))
    with pytest.raises(ValueError, match="takes no BPE `merges`"):
        FourMTextTokenizer(vocab=_small_vocab(), merges=[("a", "b")], class_names=["wine glass"])
    with pytest.raises(ValueError, match="class_names \\['red cube'\\] differ from the class tokens"):
        FourMTextTokenizer(tokenizer_file=str(tmp_path / "tokenizer.json"), class_names=["red cube"])


# ----- boxes <-> text -----


def test_boxes_to_text_format_sorting_and_rounding():
    boxes = [
        {"label": "Red Cube", "box": [0.5, 0.5, 1.0, 1.0]},
        {"label": "wine glass", "box": [0.0, 0.1, 0.2, 0.3]},
        {"label": "green  cylinder", "box": [0.25, 0.0, 0.3, 0.9]},
    ]
    assert boxes_to_text(boxes) == (
        "v0=0 v1=100 v2=200 v3=300 wine glass "
        "v0=250 v1=0 v2=300 v3=899 green cylinder "
        "v0=500 v1=500 v2=999 v3=999 Red Cube"
    )
    assert boxes_to_text(boxes, coord_bins=11) == (
        "v0=0 v1=1 v2=2 v3=3 wine glass v0=2 v1=0 v2=3 v3=9 green cylinder v0=5 v1=5 v2=10 v3=10 Red Cube"
    )
    assert boxes_to_text([]) == ""
    assert [coordinate_to_bin(v, 1000) for v in (0.0, 0.0005, 0.5, 1.0)] == [0, 0, 500, 999]


@pytest.mark.parametrize("coord_bins", [1000, 64])
def test_boxes_round_trip_within_one_bin(trained, coord_bins):
    rng = np.random.default_rng(1)
    labels = ["red cube", "wine glass", "yellow cone", "blue sphere"]
    boxes = []
    for index in range(12):
        x = np.sort(rng.uniform(0, 1, 2))
        y = np.sort(rng.uniform(0, 1, 2))
        boxes.append({"label": labels[index % 4], "box": [x[0], y[0], x[1], y[1]]})
    boxes.append({"label": "red cube", "box": [0.0, 0.0, 1.0, 1.0]})
    expected = sorted(boxes, key=lambda b: math.hypot(b["box"][0], b["box"][1]))
    parsed = text_to_boxes(boxes_to_text(boxes, coord_bins=coord_bins), coord_bins=coord_bins)
    assert [b["label"] for b in parsed] == [b["label"] for b in expected]
    bin_width = 1 / (coord_bins - 1)
    for got, want in zip(parsed, expected):
        assert np.allclose(got["box"], want["box"], atol=bin_width / 2 + 1e-9), (got, want)
    assert parsed[-1]["box"] == [0.0, 0.0, 1.0, 1.0] or parsed[0]["box"] == [0.0, 0.0, 1.0, 1.0]
    if coord_bins == 1000:  # through the tokenizer's ids and back
        ids = trained.encode_boxes(boxes)
        assert trained.unk_token_id not in ids
        assert trained.decode_boxes(ids) == parsed
        assert text_to_boxes(ids, tokenizer=trained) == parsed


C = "v0=10 v1=20 v2=30 v3=40"  # a well-formed coordinate group
CUBE = {"label": "red cube", "box": [10 / 999, 20 / 999, 30 / 999, 40 / 999]}


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"{C} red cube", [CUBE]),
        (f"{C} red cube {C}", [CUBE]),  # trailing box without label
        (f"{C} red cube v0=1 v1=2", [CUBE]),  # trailing incomplete box
        (f"{C} red cube v0=1 v1=2 v2=3 blue", [CUBE]),  # label where v3 belongs
        (f"v0=1 v2=3 v1=2 v3=4 blue {C} red cube", [CUBE]),  # out-of-order coordinates
        (f"v1=2 v0=1 {C} red cube", [CUBE]),  # starts mid-box
        (f"{C} red cube v3=5 yellow", [CUBE]),  # stray coordinate after a label
        (f"{C} red cube [EOS] {C} blue", [CUBE]),  # text after [EOS] is ignored
        (f"{C} red cube [S_2] {C} blue", [CUBE, dict(CUBE, label="blue")]),
        (f"{C} [S_1] red cube", []),  # a sentinel where the label belongs
        (f"{C} [UNK] red cube", [CUBE]),  # unknown words are left out of the label
        (f"{C} [UNK]", []),
        (f"{C}", []),
        ("v0=999 v1=0 v2=0 v3=5 cube", []),  # xmin > xmax
        ("v0=0 v1=9 v2=5 v3=5 cube", []),  # ymin > ymax
        ("v0=0 v1=0 v2=1000 v3=5 cube", []),  # bin beyond coord_bins
        ("garbage ### ,,, v9=3 [PAD]", []),
        ("", []),
        ("   \n\t ", []),
        (f"{C} red cube, {C} red cube", [dict(CUBE, label="red cube,"), CUBE]),
        ("v0=1 v1=2 v2=3 v3=4 v0=5 v1=6 v2=7 v3=8 cube", [{"label": "cube", "box": [5 / 999, 6 / 999, 7 / 999, 8 / 999]}]),
    ],
)
def test_text_to_boxes_tolerates_malformed_text(text, expected):
    assert text_to_boxes(text) == expected


def test_text_to_boxes_filters_unknown_classes():
    text = f"{C} red cube {C} dragon"
    assert text_to_boxes(text, class_names=["Red Cube"]) == [CUBE]


def test_text_to_boxes_fuzz_never_crashes_and_returns_valid_boxes(trained):
    rng = np.random.default_rng(2)
    vocabulary = [f"v{a}={b}" for a in range(4) for b in (0, 1, 500, 998, 999, 1000, 12345)]
    vocabulary += ["red", "cube", "wine glass", "[S_3]", "[EOS]", "[PAD]", "[UNK]", "[SOS]", "v=", "v0=", "=", "##x"]
    for _ in range(300):
        words = rng.choice(vocabulary, size=int(rng.integers(0, 30)))
        for box in text_to_boxes(" ".join(words)):
            assert box["label"] and set(box) == {"label", "box"}
            xmin, ymin, xmax, ymax = box["box"]
            assert 0 <= xmin <= xmax <= 1 and 0 <= ymin <= ymax <= 1
    for _ in range(300):  # random ids, including ids outside the vocabulary
        ids = rng.integers(-5, len(trained) + 50, size=int(rng.integers(0, 40)))
        boxes = trained.decode_boxes(ids.tolist())
        assert isinstance(boxes, list)
        # a biased stream that mostly follows the grammar
        ids = []
        for _ in range(int(rng.integers(1, 6))):
            ids += [trained.coordinate_token_id(a, int(rng.integers(0, 1000))) for a in range(4) if rng.random() < 0.9]
            ids += [int(i) for i in rng.integers(trained.first_wordpiece_id - 4, len(trained), size=2)]
        for box in trained.decode_boxes(ids):
            xmin, ymin, xmax, ymax = box["box"]
            assert 0 <= xmin <= xmax <= 1 and 0 <= ymin <= ymax <= 1 and box["label"]


# ----- bad input -----


def test_empty_text_is_rejected(trained):
    for text in ["", "   \n"]:
        with pytest.raises(ValueError, match="caption: text is empty"):
            trained.encode_for_model(text)
    with pytest.raises(TypeError, match="must be a str"):
        trained.encode_for_model(None)
    with pytest.raises(ValueError, match="exceed max_length=3"):
        trained.encode_for_model("a red cube to the left of a blue sphere", max_length=3)


@pytest.mark.parametrize(
    "box, message",
    [
        ({"label": "cube", "box": [0.1, 0.1, 1.2, 0.5]}, "box 1 field 'box' xmax=1.2 is outside \\[0, 1\\]"),
        ({"label": "cube", "box": [-0.1, 0.1, 0.2, 0.5]}, "box 1 field 'box' xmin=-0.1 is outside"),
        ({"label": "cube", "box": [0.1, float("nan"), 0.2, 0.5]}, "box 1 field 'box' ymin=nan is outside"),
        ({"label": "cube", "box": [0.6, 0.1, 0.2, 0.5]}, "box 1 field 'box' has xmin=0.6 > xmax=0.2"),
        ({"label": "cube", "box": [0.1, 0.6, 0.2, 0.5]}, "box 1 field 'box' has ymin=0.6 > ymax=0.5"),
        ({"label": "cube", "box": [0.1, 0.2, 0.3]}, "box 1 field 'box' has 3 values"),
        ({"label": "", "box": [0.1, 0.2, 0.3, 0.4]}, "box 1 field 'label' must be a non-empty str"),
        ({"box": [0.1, 0.2, 0.3, 0.4]}, "box 1 has no 'label' field"),
        ({"label": "v0=3 cube", "box": [0.1, 0.2, 0.3, 0.4]}, "reads as a special token"),
    ],
)
def test_bad_boxes_are_rejected(box, message):
    good = {"label": "cube", "box": [0.0, 0.0, 0.5, 0.5]}
    with pytest.raises(ValueError, match=message):
        boxes_to_text([good, box])


def test_bad_box_types_and_unknown_labels():
    with pytest.raises(TypeError, match="box 0 must be a dict"):
        boxes_to_text([[0.1, 0.2, 0.3, 0.4]])
    with pytest.raises(TypeError, match="boxes must be a list"):
        boxes_to_text({"label": "cube", "box": [0, 0, 1, 1]})
    with pytest.raises(TypeError, match="xmin must be a number"):
        boxes_to_text([{"label": "cube", "box": ["a", 0, 1, 1]}])
    with pytest.raises(ValueError, match="box 0 field 'label' 'dragon' is not a known class name"):
        boxes_to_text([{"label": "dragon", "box": [0, 0, 1, 1]}], class_names=["cube"])
    assert boxes_to_text([{"label": "Cube", "box": [0, 0, 1, 1]}], class_names=["cube"]) == "v0=0 v1=0 v2=999 v3=999 cube"
    with pytest.raises(TypeError, match="token ids need `tokenizer=`"):
        text_to_boxes([1, 2, 3])


def test_bad_training_input(trained):
    with pytest.raises(ValueError, match="no non-empty text"):
        train_text_tokenizer(["", "  "], vocab_size=100)
    with pytest.raises(TypeError, match="text 1 must be a str"):
        train_text_tokenizer(["a cube", 3], vocab_size=100)
    with pytest.raises(ValueError, match="lists 'red cube' twice"):
        train_text_tokenizer(["a cube"], class_names=["red cube", "Red  Cube"])
    with pytest.raises(ValueError, match="vocab_size"):
        train_text_tokenizer(["a cube"], vocab_size=0)
    with pytest.raises(ValueError, match="coord_bins"):
        train_text_tokenizer(["a cube"], coord_bins=1)
    with pytest.raises(ValueError, match="sentinel index"):
        trained.sentinel_token_id(200)
    with pytest.raises(ValueError, match="coordinate bin"):
        trained.coordinate_token_id(0, 1000)


# ----- command line -----


def test_cli_trains_from_a_saved_dataset(tmp_path, capsys):
    from datasets import Dataset
    from transformers import AutoTokenizer

    import fourm_hf  # noqa: F401
    from fourm_hf.cli import main

    captions = synthetic_captions(24)
    rows = {
        "caption": captions,
        "boxes": [
            [{"label": "red cube", "box": [0.1, 0.1, 0.4, 0.4]}, {"label": "blue sphere", "box": [0.5, 0.5, 0.9, 0.9]}]
        ]
        * len(captions),
    }
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "corpus"))
    out = tmp_path / "tokenizer"
    argv = ["train-text-tokenizer", "--dataset", str(tmp_path / "corpus"), "--columns", "caption"]
    argv += ["--class-names-from", "det", "--vocab-size", "600", "--coord-bins", "100", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0  # overwrites an existing folder in place
    assert sorted(os.listdir(tmp_path)) == ["corpus", "tokenizer"]  # no staging folders left behind
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer) is FourMTextTokenizer
    assert tokenizer.class_names == ["blue sphere", "red cube"]
    assert (tokenizer.coord_bins, tokenizer.num_sentinels) == (100, 200)
    assert tokenizer.unk_token_id not in tokenizer(captions[0])["input_ids"]
    # an expected error is one line on stderr and exit status 2 (cli.run_command)
    assert main(["train-text-tokenizer", "--dataset", str(tmp_path / "corpus"), "--columns", "title", "--out", str(out)]) == 2
    assert "no column 'title'" in capsys.readouterr().err
