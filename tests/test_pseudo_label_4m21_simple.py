"""The simple 4M-21 pseudo-labellers (t5_caption, canny_edge, color_palette, metadata) on scikit-image's
photographs, with a tiny random T5 encoder of the real class built here (no network)."""

from __future__ import annotations

import json
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from fourm_hf.data import pseudo_label as pl
from fourm_hf.text.sequence_modalities import SEQUENCE_MAX_LENGTHS, to_text
from fourm_hf.text.text_serialization import METADATA_KEYS, parse_serialized

SIZE = 40
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CAPTIONS = ["A man in a space suit.", "a red cup of coffee on the table", "the cat. A cat!", "a rocket"]
WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "the", "on", "man", "in", "space", "suit", "cup", "coffee",
         "table", "rocket"]


def _photo(name: str, size=(56, 48)) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).resize(size, Image.Resampling.BILINEAR)


def build_tiny_t5(folder, d_model: int = 16) -> str:
    """A randomly initialised T5EncoderModel (``d_model`` wide) and a unigram T5Tokenizer saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [("\u2581" + word, -1.0) for word in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz.,!?"]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5Tokenizer(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)
    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=32, num_layers=2, num_heads=2))
    model.eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def write_photo_dataset(folder) -> str:
    """The photographs (assorted sizes) with a ``caption`` column, saved with save_to_disk."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    sizes = [(56, 48), (48, 64), (60, 40), (44, 44)]
    images = [_photo(name, size) for name, size in zip(PHOTOS, sizes)]
    features = Features({"image": ImageFeature(), "caption": Value("string")})
    Dataset.from_dict({"image": images, "caption": CAPTIONS}, features=features).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_tiny_t5(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def photo_dataset(tmp_path_factory):
    return write_photo_dataset(tmp_path_factory.mktemp("photos") / "data")


def _labellers(t5_folder):
    return pl.build_labellers(t5_model=t5_folder, batch_size=2, canny=True, color_palette=True, metadata=True)


# ---- canny_edge -------------------------------------------------------------------------------------------
def test_canny_edges_are_binary_maps_of_the_image_size():
    for name in PHOTOS:
        edges = pl.canny_edges(_photo(name, (SIZE, SIZE)))
        assert edges.shape == (SIZE, SIZE) and edges.dtype == np.uint8
        assert set(np.unique(edges)) <= {0, 1} and 0 < edges.mean() < 0.5
    step = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    step[:, SIZE // 2 :] = 255  # one vertical step edge, nothing else
    edges = pl.canny_edges(Image.fromarray(step))
    columns = np.nonzero(edges.any(axis=0))[0]
    assert set(columns) <= {SIZE // 2 - 1, SIZE // 2} and edges[2:-2].any(axis=1).all()
    assert not pl.canny_edges(Image.new("RGB", (SIZE, SIZE), (90, 20, 200))).any()


def test_canny_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sigma must be a number >= 0"):
        pl.CannyEdgeLabeller(sigma=-1)
    with pytest.raises(ValueError, match="0 <= low <= high"):
        pl.CannyEdgeLabeller(thresholds=(0.5, 0.1))


# ---- color_palette ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PHOTOS)
def test_palette_colours_come_from_the_image_and_serialise(name):
    image = _photo(name)
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    for count in (1, 4, pl.MAX_PALETTE_COLORS):
        palette = pl.extract_palette(image, count)
        assert 1 <= len(palette) <= count and len({tuple(c) for c in palette}) == len(palette)
        for color in palette:
            assert all(isinstance(c, int) and 0 <= c <= 255 for c in color)
            assert np.min(np.abs(pixels - np.asarray(color)).sum(axis=1)) == 0  # a pixel of the image, exactly
        text = to_text("color_palette", palette)
        assert len(text.split()) + 1 <= SEQUENCE_MAX_LENGTHS["color_palette"]  # + [EOS]
        assert [list(c) for c in parse_serialized("color_palette", text).colors] == palette
    assert pl.extract_palette(image, 3) == pl.extract_palette(image, 3)  # deterministic


def test_palette_of_a_two_colour_image_and_random_sizes():
    two = np.zeros((20, 20, 3), dtype=np.uint8)
    two[:5] = (200, 10, 30)  # a quarter red, the rest black
    assert pl.extract_palette(Image.fromarray(two), 7) == [[0, 0, 0], [200, 10, 30]]
    labeller = pl.ColorPaletteLabeller("random")
    sizes = [len(p) for p in labeller.label([_photo(n) for n in PHOTOS], {})["color_palette"]]
    assert all(1 <= s <= 7 for s in sizes)
    with pytest.raises(ValueError, match="'random' or an integer in 1..7"):
        pl.ColorPaletteLabeller(8)


# ---- metadata -----------------------------------------------------------------------------------------------
def _metadata(image, **labels):
    labeller = pl.MetadataLabeller(labels.pop("classes", None))
    return json.loads(labeller.label([image], {k: [v] for k, v in labels.items()})["metadata"][0])


def test_metadata_fields_are_in_range_and_parse_back():
    classes = ["person", "road", "sky", "grass-merged", "cat"]
    semseg = np.zeros((SIZE, SIZE), dtype=np.uint8)
    semseg[: SIZE // 2] = 2  # sky
    semseg[SIZE // 2 :, : SIZE // 4] = 1  # road: a quarter of the lower half
    semseg[SIZE // 2 :, SIZE // 4 :] = 4  # cat
    boxes = [{"label": "person", "box": [0, 0, 1, 1]}, {"label": "cat", "box": [0, 0, 0.5, 0.5]},
             {"label": "person", "box": [0.1, 0.1, 0.2, 0.2]}]
    mask = {"box": [0.0, 0.0, 0.5, 0.5], "mask": bytes(512)}
    sam = [{"point": [0.1, 0.1], "masks": [mask]}, {"point": [0.2, 0.2], "masks": [mask]}, {"point": [0.9, 0.9], "masks": []}]
    depth = np.ones((SIZE, SIZE), dtype=np.float32)
    depth[:, SIZE // 2 :] = 2.0  # one occlusion edge
    normal = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
    normal[..., 2] = -1.0  # a plane
    image = _photo("astronaut", (SIZE, SIZE))
    values = _metadata(image, original_size=(512, 300), caption="A man. In a suit!", boxes=boxes, sam_instance=sam,
                       semseg=semseg, classes=classes, depth=depth, normal=normal)
    assert list(values) == [k for k in METADATA_KEYS if k in values]  # the reference's key order
    assert set(METADATA_KEYS) - set(values) == {"watermark_score", "aesthetic_score"}
    assert values["original_width"] == 512 // 32 and values["original_height"] == 300 // 32
    assert (values["caption_n_chars"], values["caption_n_words"], values["caption_n_sentences"]) == (17, 5, 2)
    assert (values["n_coco_instances"], values["coco_instance_diversity"], values["n_humans"]) == (3, 2, 2)
    assert values["n_sam_instances"] == 1 and values["semantic_diversity"] == 3
    assert values["walkability"] == int(0.125 * 49) and values["objectness"] == int(0.375 * 49)
    assert values["geometric_complexity"] == 0 and values["occlusion_score"] == int(2 / SIZE / 0.25 * 49)
    for key in ("colorfulness", "brightness", "contrast", "saturation", "entropy"):
        assert 0 < values[key] <= 49, key
    text = to_text("metadata", values, metadata_keys=METADATA_KEYS)
    assert len(text.split()) + 1 <= SEQUENCE_MAX_LENGTHS["metadata"]
    assert parse_serialized("metadata", text, metadata_keys=METADATA_KEYS) == values


def test_metadata_of_a_flat_gray_image_and_absent_sources():
    values = _metadata(Image.new("RGB", (SIZE, SIZE), (128, 128, 128)))
    assert values == {"original_width": SIZE // 32, "original_height": SIZE // 32, "colorfulness": 0,
                      "brightness": int(128 / 255 * 49), "contrast": 0, "saturation": 0, "entropy": 0}
    only_ids = _metadata(Image.new("RGB", (8, 8)), semseg=np.array([[0, 255], [3, 3]], dtype=np.uint8))
    assert only_ids["semantic_diversity"] == 2 and "walkability" not in only_ids and "objectness" not in only_ids


# ---- t5_caption ----------------------------------------------------------------------------------------------
def test_t5_vectors_are_the_encoder_states_of_the_caption_tokens(t5_folder):
    from transformers import AutoTokenizer, T5EncoderModel

    labeller = pl.T5CaptionLabeller(t5_folder, batch_size=3)
    vectors = labeller.label([None] * 4, {"caption": CAPTIONS})["t5_caption"]
    model, tokenizer = T5EncoderModel.from_pretrained(t5_folder).eval(), AutoTokenizer.from_pretrained(t5_folder)
    for caption, vector in zip(CAPTIONS, vectors):
        ids = tokenizer(caption, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expected = model(input_ids=ids).last_hidden_state[0].numpy()
        assert vector.dtype == np.float16 and vector.shape == (ids.shape[1], 16)
        np.testing.assert_allclose(vector.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    short = pl.T5CaptionLabeller(t5_folder, max_length=4)
    with pytest.warns(UserWarning, match="1 of 2 captions have more than 4 T5 tokens"):
        cut = short.label([None, None], {"caption": ["a cat", "the man in a space suit"]})["t5_caption"]
    assert [v.shape[0] for v in cut] == [3, 4]


def test_t5_unhappy_paths(t5_folder, tmp_path):
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="cannot load model .*expected a local folder or Hub id of a T5 model"):
        pl.T5CaptionLabeller(str(tmp_path / "missing"))
    BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="is a 'bert' model, not a T5 model"):
        pl.T5CaptionLabeller(str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        pl.T5CaptionLabeller(t5_folder, dtype="int8")
    with pytest.raises(ValueError, match="image 1 of this batch is NoneType"):
        pl.T5CaptionLabeller(t5_folder).label([None, None], {"caption": ["a cat", None]})


def test_t5_without_a_caption_column_fails_before_labelling(t5_folder, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _photo("coffee").save(folder / "coffee.png")
    labellers = pl.build_labellers(t5_model=t5_folder)
    with pytest.raises(ValueError, match=r"t5_caption: needs a 'caption' column.*--caption-model"):
        pl.pseudo_label_dataset(folder, tmp_path / "out", labellers, size=SIZE)
    assert not (tmp_path / "out.shards").exists()


# ---- the four together: dataset, resume after SIGKILL, CLI -------------------------------------------------------
def _assert_same_dataset(a, b):
    assert a.column_names == b.column_names and a.features == b.features and len(a) == len(b)
    for row_a, row_b in zip(a, b):
        for key in a.column_names:
            if key == "rgb":
                np.testing.assert_array_equal(np.asarray(row_a[key]), np.asarray(row_b[key]))
            elif key in ("t5_caption", "canny_edge"):
                np.testing.assert_array_equal(np.asarray(row_a[key]), np.asarray(row_b[key]), err_msg=key)
            else:
                assert row_a[key] == row_b[key], key


def test_dataset_columns_follow_the_contract(t5_folder, photo_dataset, tmp_path):
    from datasets import Array2D, List, Value

    dataset = pl.pseudo_label_dataset(photo_dataset, tmp_path / "out", _labellers(t5_folder), size=SIZE, batch_size=2, shard_size=2)
    features = dataset.features
    assert features["t5_caption"] == Array2D((None, 16), "float16")
    assert features["canny_edge"] == Array2D((SIZE, SIZE), "uint8")
    assert features["color_palette"] == List(List(Value("int32"), length=3))
    assert features["metadata"] == Value("string") and dataset["caption"] == CAPTIONS
    assert "halffloat" in str(dataset.data.column("t5_caption").type.storage_type)  # stored as float16
    for row in dataset.with_format("numpy"):
        assert row["t5_caption"].ndim == 2 and row["t5_caption"].shape[1] == 16
        assert row["canny_edge"].shape == (SIZE, SIZE) and set(np.unique(row["canny_edge"])) <= {0, 1}
    first = dataset[0]
    assert json.loads(first["metadata"])["original_width"] == 56 // 32
    assert json.loads(first["metadata"])["caption_n_words"] == 6
    pixels = np.asarray(first["rgb"]).reshape(-1, 3).astype(int)
    assert all(np.min(np.abs(pixels - np.asarray(c)).sum(axis=1)) == 0 for c in first["color_palette"])
    meta = pl.load_metadata(tmp_path / "out")["labellers"]
    assert meta["t5_caption"]["max_length"] == 77 and meta["canny_edge"]["sigma"] == 1.0


def test_killed_process_resumes_to_the_same_dataset(t5_folder, photo_dataset, tmp_path):
    from test_pseudo_label import label_until_killed

    out = tmp_path / "out"
    label_until_killed(f"pl.build_labellers(t5_model={t5_folder!r}, batch_size=2, canny=True, color_palette=True, metadata=True)",
                       photo_dataset, out, SIZE)
    labellers = _labellers(t5_folder)
    resumed = pl.pseudo_label_dataset(photo_dataset, out, labellers, size=SIZE, batch_size=2, shard_size=2)
    reference = pl.pseudo_label_dataset(photo_dataset, tmp_path / "ref", labellers, size=SIZE, batch_size=2, shard_size=2)
    _assert_same_dataset(resumed, reference)


def test_cli(t5_folder, photo_dataset, tmp_path, capsys):
    from fourm_hf.cli import main

    code = main(["pseudo-label", "--images", photo_dataset, "--out", str(tmp_path / "out"), "--t5-model", t5_folder,
                 "--canny", "--canny-sigma", "1.5", "--color-palette", "--palette-colors", "3", "--metadata", "--size", "32"])
    assert code == 0 and "'t5_caption', 'canny_edge', 'color_palette', 'metadata'" in capsys.readouterr().out
    code = main(["pseudo-label", "--images", photo_dataset, "--out", str(tmp_path / "bad"), "--color-palette",
                 "--palette-colors", "many"])
    assert code == 2 and "--palette-colors must be 'random' or an integer 1..7" in capsys.readouterr().err
