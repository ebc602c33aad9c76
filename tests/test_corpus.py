"""The corpus builder: schema, shared crops, kill-and-resume, streaming + split by node, collator + model."""

import numpy as np
import pytest
import torch
from datasets import Array3D, Dataset, DatasetDict, IterableDataset, List, Value, load_from_disk

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf.cli import main as cli_main
from fourm_hf.configuration_fourm import FourMConfig
from fourm_hf.data.corpus import build_corpus, corpus_features, crop_generator, load_corpus
from fourm_hf.data.masking import FourMMaskingCollator
from fourm_hf.data.scenes import SCENE_CLASSES, make_scene_dataset
from fourm_hf.data.shards import load_dataset_split, shard_bounds, shard_name, start_sharded_run, unwritten_shards
from fourm_hf.modalities import get_modality
from fourm_hf.processing.image_processing_fourm import IMAGENET_MEAN, IMAGENET_STD, FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.text.tokenization_fourm import train_text_tokenizer
from fourm_hf.testing_utils import tiny_vqvae as make_tiny_vqvae

SIZE, PATCH, SCENE_SIZE, NUM_SCENES, CROPS, COORD_BINS, NUM_SENTINELS = 32, 8, 48, 5, 2, 64, 16
GRID = SIZE // PATCH
TOKEN_MODALITIES = ("tok_rgb", "tok_depth", "tok_normal", "tok_semseg")
BUILD = dict(crops=CROPS, batch_size=2, shard_size=2, seed=7, crop="random", progress=False)


def tiny_vqvae(kind, seed=0):
    return make_tiny_vqvae(kind, image_size=SIZE, patch_size=PATCH, seed=seed)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def scenes(workdir):
    return make_scene_dataset(NUM_SCENES, SCENE_SIZE, workdir / "scenes")


@pytest.fixture(scope="module")
def processor(scenes):
    labels = sorted({box["label"] for boxes in scenes["boxes"] for box in boxes})
    tokenizer = train_text_tokenizer(scenes["caption"], vocab_size=200, class_names=labels,
                                     num_sentinels=NUM_SENTINELS, coord_bins=COORD_BINS)
    # crops down to 40% of the area, so crops clearly differ from the whole image
    image_processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES), crop_scale=(0.4, 1.0))
    vqvaes = {f"tok_{kind}": tiny_vqvae(kind, seed) for seed, kind in enumerate(("rgb", "depth", "normal", "semseg"))}
    return FourMProcessor(image_processor, tokenizer, vqvaes=vqvaes, max_text_length=128)


@pytest.fixture(scope="module")
def corpus_dir(workdir, scenes, processor):
    build_corpus(scenes, processor, workdir / "corpus", **BUILD)
    return workdir / "corpus"


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    return load_from_disk(str(corpus_dir))


def test_schema_and_row_layout(corpus, processor, scenes):
    assert len(corpus) == NUM_SCENES * CROPS
    features = corpus.features
    for name in TOKEN_MODALITIES:
        assert features[name] == List(Value("int32"), length=GRID * GRID)
    assert features["caption"] == List(Value("int32")) and features["det"] == List(Value("int32"))
    assert features["rgb_image"] == Array3D((SIZE, SIZE, 3), "uint8")
    assert features["source_index"] == Value("int64") and features["crop_index"] == Value("int32")
    assert features["crop_box"] == List(Value("int32"), length=4)
    assert features == corpus_features(processor, {"tokens": list(TOKEN_MODALITIES), "caption": True, "det": True,
                                                   "rgb_image": True, "maps": []})
    assert corpus["source_index"] == [i for i in range(NUM_SCENES) for _ in range(CROPS)]
    assert corpus["crop_index"] == [k for _ in range(NUM_SCENES) for k in range(CROPS)]
    eos = processor.tokenizer.eos_token_id
    for row in range(len(corpus)):
        source = corpus[row]["source_index"]
        assert corpus[row]["caption"] == processor.tokenizer.encode_for_model(scenes[source]["caption"])
        assert corpus[row]["det"][-1] == eos
        assert all(0 <= v < 256 for name in TOKEN_MODALITIES for v in corpus[row][name])
    boxes = np.array(corpus["crop_box"])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= SCENE_SIZE).all() and (boxes[:, 0] < boxes[:, 2]).all()
    assert not np.array_equal(boxes[0::2], boxes[1::2])  # the two crops of an image differ


def test_all_modalities_of_a_crop_share_the_crop(corpus, processor, scenes):
    for row in (0, 3, 8):
        sample = corpus[row]
        source, crop_index = sample["source_index"], sample["crop_index"]
        expected_box = processor.image_processor.choose_crop_box((SCENE_SIZE, SCENE_SIZE), "random",
                                                                 crop_generator(BUILD["seed"], source, crop_index))
        assert tuple(sample["crop_box"]) == tuple(expected_box)
        scene = scenes[source]
        maps = processor.image_processor(
            images=np.asarray(scene["rgb"]), depth=np.asarray(scene["depth"], np.float32),
            normal=np.asarray(scene["normal"], np.float32), semseg=np.asarray(scene["semseg"]), boxes=scene["boxes"],
            crop_box=sample["crop_box"], return_tensors="pt",
        )
        for name, key in (("tok_depth", "depth"), ("tok_normal", "normal"), ("tok_semseg", "semseg"), ("tok_rgb", "tokenizer_rgb")):
            direct = processor.vqvaes[name].encode(maps[key]).reshape(-1).tolist()
            assert sample[name] == direct, name
        expected_rgb = np.round((maps["tokenizer_rgb"][0].numpy().transpose(1, 2, 0) + 1) * 127.5)
        np.testing.assert_array_equal(np.asarray(sample["rgb_image"]), expected_rgb.astype(np.uint8))
        decoded = processor.tokenizer.decode_boxes(sample["det"])
        expected = sorted(maps["boxes"][0], key=lambda b: np.hypot(b["box"][0], b["box"][1]))
        assert [b["label"] for b in decoded] == [b["label"] for b in expected]
        for got, want in zip(decoded, expected):
            np.testing.assert_allclose(got["box"], want["box"], atol=0.5 / (COORD_BINS - 1) + 1e-6)


def test_kill_and_resume_gives_the_uninterrupted_corpus(workdir, scenes, processor, corpus):
    out = workdir / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_corpus(scenes, processor, out, _stop_after_shards=1, **BUILD)
    assert not out.exists() and len(list((workdir / "resumed.shards").glob("shard-*"))) == 1
    with pytest.raises(ValueError, match="unfinished run"):
        build_corpus(scenes, processor, out, **{**BUILD, "seed": 8})
    resumed = build_corpus(scenes, processor, out, **BUILD)
    assert not (workdir / "resumed.shards").exists()
    assert resumed.features == corpus.features
    assert resumed.to_dict() == corpus.to_dict()
    # a finished corpus is loaded as it is; other arguments are refused
    assert build_corpus(scenes, processor, out, **BUILD).to_dict() == corpus.to_dict()
    with pytest.raises(ValueError, match="holds a corpus made with"):
        build_corpus(scenes, processor, out, **{**BUILD, "crops": 3})


def test_training_format_gives_imagenet_pixel_values(corpus_dir, corpus):
    loaded = load_corpus(corpus_dir)
    sample = loaded[3]
    assert "rgb_image" not in sample and sample["pixel_values"].dtype == np.float32
    assert sample["pixel_values"].shape == (3, SIZE, SIZE)
    image = np.asarray(corpus[3]["rgb_image"], dtype=np.float32).transpose(2, 0, 1) / 255.0
    expected = (image - np.reshape(IMAGENET_MEAN, (3, 1, 1))) / np.reshape(IMAGENET_STD, (3, 1, 1))
    np.testing.assert_allclose(sample["pixel_values"], expected, atol=1e-6)
    assert sample["tok_depth"].dtype == np.int64 and sample["tok_depth"].tolist() == corpus[3]["tok_depth"]


@pytest.mark.parametrize("streaming", [False, True])
def test_split_by_node_gives_disjoint_covering_parts(corpus_dir, corpus, streaming):
    world_size, seen = 3, []
    for rank in range(world_size):
        part = load_corpus(corpus_dir, streaming=streaming, rank=rank, world_size=world_size, add_sample_index=True)
        assert isinstance(part, IterableDataset) == streaming
        rows = list(part)
        assert rows, f"rank {rank} got nothing"
        for row in rows:
            index = int(row["sample_index"])
            assert (row["source_index"], row["crop_index"]) == (corpus[index]["source_index"], corpus[index]["crop_index"])
            assert row["tok_semseg"].tolist() == corpus[index]["tok_semseg"]
            assert row["pixel_values"].shape == (3, SIZE, SIZE)
            seen.append(index)
    assert sorted(seen) == list(range(len(corpus)))  # disjoint (no repeats) and covering


def test_collator_and_model_accept_corpus_rows(corpus_dir, processor):
    modeling = pytest.importorskip("fourm_hf.modeling.modeling_fourm", reason="FourMModel is not available")
    vocab = len(processor.tokenizer)
    specs = {name: get_modality(name).replace(vocab_size=256).to_dict() for name in TOKEN_MODALITIES}
    specs["tok_semseg"]["num_channels"] = len(SCENE_CLASSES)
    for name in ("caption", "det"):
        specs[name] = get_modality(name).replace(vocab_size=vocab, max_length=128).to_dict()
    config = FourMConfig(
        hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2, image_size=SIZE,
        patch_size=PATCH, input_modalities=["rgb", *TOKEN_MODALITIES, "caption", "det"],
        output_modalities=[*TOKEN_MODALITIES, "caption", "det"], modality_specs=specs,
    )
    corpus = load_corpus(corpus_dir, add_sample_index=True)
    collator = FourMMaskingCollator(config, input_budget=16, target_budget=16, num_sentinels=NUM_SENTINELS, seed=0)
    assert collator.validate_dataset(corpus) == len(corpus)
    batch = collator([corpus[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, 16) and (batch["attention_mask"].sum(1) == 16).all()
    torch.manual_seed(0)
    output = modeling.FourMModel(config)(**batch)
    assert torch.isfinite(output.loss)


def test_cli_builds_the_same_corpus(workdir, scenes, processor, corpus, capsys):
    processor.save_pretrained(workdir / "processor")
    out = workdir / "cli"
    code = cli_main(["build-corpus", "--dataset", str(workdir / "scenes"), "--processor", str(workdir / "processor"),
                     "--out", str(out), "--crops", str(CROPS), "--seed", str(BUILD["seed"]), "--batch-size", "2",
                     "--shard-size", "2"])
    assert code == 0 and "wrote 10 rows" in capsys.readouterr().out
    assert load_from_disk(str(out)).to_dict() == corpus.to_dict()
    assert cli_main(["build-corpus", "--dataset", str(workdir / "nowhere"), "--processor", str(workdir / "processor"),
                     "--out", str(workdir / "cli2")]) == 2


def test_bad_arguments(workdir, scenes, processor):
    with pytest.raises(ValueError, match="crops must be an int >= 1"):
        build_corpus(scenes, processor, workdir / "bad", crops=0)
    with pytest.raises(ValueError, match="crop must be one of"):
        build_corpus(scenes, processor, workdir / "bad", crop="corner")
    with pytest.raises(ValueError, match="none of the map columns"):
        build_corpus(scenes.select_columns(["caption"]), processor, workdir / "bad")
    with pytest.raises(ValueError, match="not a corpus written by build_corpus"):
        load_corpus(workdir / "scenes")
    with pytest.raises(ValueError, match="rank must be in"):
        load_corpus(workdir / "corpus", rank=3, world_size=3)


def test_shard_helpers_cut_resume_and_refuse_other_parameters(tmp_path):
    """What make-scenes, build-corpus and pseudo-label share: bounds, the shards folder, what is left to write."""
    assert shard_bounds(5, 2) == [(0, 0, 2), (1, 2, 4), (2, 4, 5)]
    assert shard_bounds(4, 4) == [(0, 0, 4)]
    out = tmp_path / "out"
    shards_dir = start_sharded_run(out, {"size": 32, "crop": ("a", 1)}, "run.json", "build-corpus")
    assert shards_dir == tmp_path / "out.shards" and (shards_dir / "run.json").is_file()
    assert start_sharded_run(out, {"size": 32, "crop": ["a", 1]}, "run.json", "build-corpus") == shards_dir
    with pytest.raises(ValueError, match=r"build-corpus: .* unfinished run with different \['size'\]"):
        start_sharded_run(out, {"size": 64, "crop": ["a", 1]}, "run.json", "build-corpus")
    bounds = shard_bounds(5, 2)
    (shards_dir / shard_name(1, 3)).mkdir()
    assert unwritten_shards(shards_dir, bounds, 3) == [(0, 0, 2), (2, 4, 5)]


def test_load_dataset_split_reads_a_dataset_or_one_split(tmp_path):
    Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "plain"))
    DatasetDict({"train": Dataset.from_dict({"x": [3]})}).save_to_disk(str(tmp_path / "dict"))
    assert load_dataset_split(tmp_path / "plain", "ignored")["x"] == [1, 2]
    assert load_dataset_split(tmp_path / "dict", "train")["x"] == [3]
    with pytest.raises(ValueError, match=r"--data .*dict: no split 'test'; splits are \['train'\]"):
        load_dataset_split(tmp_path / "dict", "test", option="--data")

