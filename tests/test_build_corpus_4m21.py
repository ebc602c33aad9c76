"""build-corpus over a pseudo-labelled 4M-21 dataset with a processor of released tokenizers.

The processor holds the released tokenizer fixtures (``../shared/fixtures/ml4m/tokenizers``: RGB DiVAE,
semseg and CLIP feature-map ViT VQ-VAEs, the DINOv2-global and pose MLPs, the SAM-instance VQ-VAE) and,
for the released families without a fixture folder (depth / normal / edge DiVAEs, the DINOv2 feature map
ViT VQ-VAE), tiny random models of the same classes, all written in the released Hub layout and loaded from
there. The dataset is built here from scikit-image photographs at 48 px with the contract's columns: Canny
edges and palettes from the pseudo-label labellers, the others simple deterministic labels (threshold
masks, ramps, seeded random features).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from datasets import Array2D, Array3D, Dataset, Features, Image as ImageFeature, List, Value, load_from_disk

import fourm_hf  # noqa: F401  (registers the Auto classes)
from fourm_hf import FourMDiVAE, FourMDiVAEConfig, FourMTokenizerModel, FourMViTVQVAE, FourMViTVQVAEConfig
from fourm_hf.cli import main as cli_main
from fourm_hf.data.corpus import build_corpus, load_corpus
from fourm_hf.data.corpus_columns import crop_feature_grid
from fourm_hf.data.pseudo_label.derived.canny_edge import canny_edges
from fourm_hf.data.pseudo_label.derived.color_palette import extract_palette
from fourm_hf.data.corpus_instances import crop_box_and_mask
from fourm_hf.data.parquet_shards import open_parquet_shards, write_parquet_shards
from fourm_hf.ml4m.assembly import modality_from_released_name
from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
from fourm_hf.processing.processing_fourm import FourMProcessor
from fourm_hf.processing.sequence_tokens import SequenceTokenizers
from fourm_hf.text.sequence_modalities import decode_sequences
from fourm_hf.text.text_serialization import METADATA_KEYS
from fourm_hf.text.tokenization_fourm import FourMTextTokenizer
from fourm_hf.tokenizers.released_layout import save_in_released_layout
from fourm_hf.tokenizers.released_modalities import ReleasedModalityTokenizer

from conftest import SHARED_DIR, shared_path, subprocess_env

SIZE, SOURCE, NUM_IMAGES, CROPS, POINTS = 32, 48, 4, 2, 3
BUILD = dict(crops=CROPS, batch_size=2, shard_size=2, seed=3, crop="random", progress=False)
VIT = dict(enc_type="vit_tiny_d32_l1_h2_enc", image_size=SIZE, codebook_size=16, latent_dim=8)
SEQUENCE_KINDS = {"human_poses": "pose", "sam_instance": "instance"}


# ---- the processor -------------------------------------------------------------------------------------
def _tiny(model_class, config_class, seed, **config):
    torch.manual_seed(seed)
    return model_class(config_class(**{**VIT, **config})).eval()


def _fixture_folders() -> dict[str, Path]:
    """Every tokenizer fixture folder by the modality it serves (discovered, read from its released repo name)."""
    root = shared_path("fixtures", "ml4m", "tokenizers")
    found = {}
    for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        repo = json.loads((folder / f"{folder.name}.json").read_text())["released_counterpart"]
        found[modality_from_released_name(repo)] = folder
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus21")


@pytest.fixture(scope="module")
def processor_dir(workdir):
    folders = _fixture_folders()
    tiny = {"tok_depth": _tiny(FourMDiVAE, FourMDiVAEConfig, 1, dec_type="unet_patched_tiny_c32_r1", n_channels=1),
            "tok_normal": _tiny(FourMDiVAE, FourMDiVAEConfig, 2, dec_type="unet_patched_tiny_c32_r1", n_channels=3),
            "tok_canny_edge": _tiny(FourMDiVAE, FourMDiVAEConfig, 3, dec_type="unet_patched_tiny_c32_r1", n_channels=1),
            "tok_dinov2": _tiny(FourMViTVQVAE, FourMViTVQVAEConfig, 4, dec_type="vit_tiny_d32_l1_h2_dec",
                                patch_proj=False, n_channels=16)}
    for name, model in tiny.items():
        save_in_released_layout(model, workdir / "released" / name)
        folders[name] = workdir / "released" / name
    folders["tok_sam_edge"] = folders["tok_canny_edge"]  # one released edge tokenizer serves both
    vqvaes, sequence = {}, SequenceTokenizers()
    for name, folder in folders.items():
        model = FourMTokenizerModel.from_pretrained(folder)
        if name in SEQUENCE_KINDS:
            size = 64 if name == "sam_instance" else 1
            sequence[name] = ReleasedModalityTokenizer(model, name, SEQUENCE_KINDS[name], image_size=size)
        else:
            grid = 2 if name in ("tok_clip", "tok_dinov2") else None  # decode-only feature tokenizers: 2x2 grid
            vqvaes[name] = ReleasedModalityTokenizer(model, name, image_size=SIZE, grid_size=grid, num_diffusion_steps=2)
    text = FourMTextTokenizer(tokenizer_file=str(shared_path("fixtures", "ml4m", "text_tokenizer_4m_wordpiece_30k.json")))
    classes = vqvaes["tok_semseg"].config.num_classes
    processor = FourMProcessor(FourMImageProcessor(image_size=SIZE, num_semseg_classes=classes, crop_scale=(0.3, 0.8)),
                               text, vqvaes=vqvaes, max_text_length=64)
    processor.sequence_tokenizers = sequence
    processor.save_pretrained(workdir / "processor")
    return workdir / "processor"


@pytest.fixture(scope="module")
def processor(processor_dir):
    return FourMProcessor.from_pretrained(processor_dir)


# ---- the pseudo-labelled dataset ------------------------------------------------------------------------
def _photos():
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    from skimage.transform import resize

    images = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket()]
    return [(resize(image, (SOURCE, SOURCE), anti_aliasing=True) * 255).astype(np.uint8) for image in images[:NUM_IMAGES]]


def _labels(rgb: np.ndarray, index: int, clip_width: int) -> dict:
    gray = rgb.mean(axis=2) / 255.0
    mask = gray > np.median(gray)
    edge = canny_edges(PILImage.fromarray(rgb))  # the pseudo-label labellers of canny_edge and color_palette
    rows, cols = np.nonzero(mask)
    box = [cols.min() / SOURCE, rows.min() / SOURCE, (cols.max() + 1) / SOURCE, (rows.max() + 1) / SOURCE]
    crop64 = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    pick = lambda n, count: np.minimum(np.arange(64) * n // 64, n - 1)  # noqa: E731
    mask64 = crop64[np.ix_(pick(crop64.shape[0], 64), pick(crop64.shape[1], 64))]
    points = [{"point": [0.2 + 0.3 * k, 0.5], "masks": [{"box": box, "mask": np.packbits(mask64).tobytes()}] if k else []}
              for k in range(POINTS)]
    grid = np.linspace(-1, 1, 3 * 3 * 16, dtype=np.float32).reshape(3, 3, 16) * (index + 1)
    rng = np.random.default_rng(index)
    person = {"box": [0.25, 0.25, 0.75, 0.9], "global_orientation": list(np.eye(3).ravel()),
              "body_pose": list(np.tile(np.eye(3).ravel(), 23)), "camera": [0.5, 0.0, 8.0], "shape": list(np.linspace(-1, 1, 10))}
    return {
        "rgb": rgb, "depth": (1.0 + gray).astype(np.float32), "semseg": (gray * 10).astype(np.uint8),
        "normal": np.dstack([np.zeros_like(gray), np.zeros_like(gray), -np.ones_like(gray)]).astype(np.float32),
        "caption": f"a photograph number {index}", "boxes": [{"label": "person", "box": [0.1, 0.1, 0.5, 0.5]}],
        "canny_edge": edge, "sam_edge": (mask ^ np.roll(mask, 1, axis=0)).astype(np.uint8),
        "clip": rng.normal(size=(3, 3, clip_width)).astype(np.float16), "dinov2": grid.astype(np.float16),
        "dinov2_global": rng.normal(size=(1, 768)).astype(np.float16),
        "t5_caption": rng.normal(size=(5 + index, 8)).astype(np.float16),
        "sam_instance": points, "human_poses": [person] if index % 2 == 0 else [],
        "color_palette": extract_palette(PILImage.fromarray(rgb), 3),
        "metadata": json.dumps({"original_width": SOURCE // 32, "brightness": int(gray.mean() * 49), "n_humans": index % 2}),
    }


FEATURES = Features({
    "rgb": ImageFeature(), "depth": Array2D((SOURCE, SOURCE), "float32"), "semseg": Array2D((SOURCE, SOURCE), "uint8"),
    "normal": Array3D((SOURCE, SOURCE, 3), "float32"), "caption": Value("string"),
    "boxes": List({"label": Value("string"), "box": List(Value("float32"), length=4)}),
    "canny_edge": Array2D((SOURCE, SOURCE), "uint8"), "sam_edge": Array2D((SOURCE, SOURCE), "uint8"),
    "clip": Array3D((3, 3, 512), "float16"), "dinov2": Array3D((3, 3, 16), "float16"),
    "dinov2_global": Array2D((1, 768), "float16"), "t5_caption": Array2D((None, 8), "float16"),
    "sam_instance": List({"point": List(Value("float32"), length=2),
                          "masks": List({"box": List(Value("float32"), length=4), "mask": Value("binary")})}),
    "human_poses": List({"box": List(Value("float32"), length=4), "global_orientation": List(Value("float32"), length=9),
                         "body_pose": List(Value("float32"), length=207), "camera": List(Value("float32"), length=3),
                         "shape": List(Value("float32"), length=10)}),
    "color_palette": List(List(Value("int32"), length=3)), "metadata": Value("string"),
})


@pytest.fixture(scope="module")
def dataset(workdir, processor_dir):
    rows = [_labels(rgb, index, 512) for index, rgb in enumerate(_photos())]
    data = Dataset.from_list(rows, features=FEATURES)
    data.save_to_disk(str(workdir / "labelled"))
    return load_from_disk(str(workdir / "labelled"))


@pytest.fixture(scope="module")
def corpus_dir(workdir, dataset, processor):
    build_corpus(dataset, processor, workdir / "corpus", **BUILD)
    return workdir / "corpus"


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    return load_from_disk(str(corpus_dir))


# ---- the corpus -----------------------------------------------------------------------------------------
IMAGE_TOKENS = ("tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_canny_edge", "tok_sam_edge", "tok_clip",
                "tok_dinov2", "tok_dinov2_global")
SEQUENCES = ("caption", "det", "sam_instance", "human_poses", "color_palette", "metadata")


def test_every_modality_is_written_with_ids_in_range(corpus, processor):
    assert len(corpus) == NUM_IMAGES * CROPS
    for name in IMAGE_TOKENS:
        ids = np.asarray(corpus[name])
        assert ids.shape == (len(corpus), processor.vqvaes[name].config.num_tokens), name
        assert 0 <= ids.min() and ids.max() < processor.vqvaes[name].config.vocab_size, name
    vocab = len(processor.tokenizer)
    for name in SEQUENCES:
        for row in corpus[name]:
            assert row and row[-1] == processor.tokenizer.eos_token_id and 0 < min(row) and max(row) < vocab, name
    t5 = corpus.with_format("numpy")["t5_caption"]
    assert [len(t) for t in t5] == [5 + i // CROPS for i in range(len(corpus))]
    assert corpus.features["t5_caption"].dtype == "float16"  # stored as the labeller wrote it


def test_sequences_decode_back(corpus, processor, dataset):
    tokenizer = processor.tokenizer
    palettes = decode_sequences(tokenizer, "color_palette", corpus["color_palette"])
    for row, decoded in zip(corpus, palettes):
        assert [list(c) for c in decoded["data"].colors] == dataset[row["source_index"]]["color_palette"]
    metadata = decode_sequences(tokenizer, "metadata", corpus["metadata"], metadata_keys=list(METADATA_KEYS))
    for row, decoded in zip(corpus, metadata):
        assert decoded["data"] == json.loads(dataset[row["source_index"]]["metadata"])
    sam = processor.sequence_tokenizers["sam_instance"]
    for decoded in decode_sequences(tokenizer, "sam_instance", corpus["sam_instance"]):
        if decoded["data"] is None:  # every point left the crop
            assert decoded["text"] == ""
            continue
        for point in decoded["data"]:
            for mask in point.masks:
                assert len(mask.token_ids) == 16 and max(mask.token_ids) < sam.config.vocab_size
    poses = decode_sequences(tokenizer, "human_poses", corpus["human_poses"])
    for row, decoded in zip(corpus, poses):
        if decoded["text"].strip() == "none":
            continue
        assert row["source_index"] % 2 == 0 and all(len(human.pose_ids) == 8 for human in decoded["data"])


def test_one_crop_is_shared_by_boxes_points_and_maps(corpus, dataset, processor):
    for row in corpus.select(range(4)):
        left, top, right, bottom = row["crop_box"]
        source = dataset[row["source_index"]]
        # the det box [0.1, 0.1, 0.5, 0.5] moves into the crop as transform_boxes says: x' = (x*W - left) / (right - left)
        expected = np.clip([(0.1 * SOURCE - left) / (right - left), (0.1 * SOURCE - top) / (bottom - top),
                            (0.5 * SOURCE - left) / (right - left), (0.5 * SOURCE - top) / (bottom - top)], 0, 1)
        det = processor.decode({"det": torch.tensor([row["det"]])})["det"]["boxes"][0]
        if expected[2] > expected[0] and expected[3] > expected[1]:
            assert np.allclose(det[0]["box"], expected, atol=1.5 / 999)
        # SAM query points: those inside the crop, in crop coordinates (bins)
        kept = [p["point"] for p in source["sam_instance"] if left <= p["point"][0] * SOURCE <= right
                and top <= p["point"][1] * SOURCE <= bottom]
        decoded = decode_sequences(processor.tokenizer, "sam_instance", [row["sam_instance"]])[0]["data"] or []
        bins = processor.tokenizer.coord_bins - 1
        assert [p.point for p in decoded] == [(round((x * SOURCE - left) / (right - left) * bins),
                                               round((y * SOURCE - top) / (bottom - top) * bins)) for x, y in kept]
        # the edge tokens are those of the edge map under the same crop
        from fourm_hf.processing.image_modalities import resize_ids
        edge = resize_ids(np.asarray(source["canny_edge"], dtype=np.int64), (left, top, right, bottom), SIZE)
        ids = processor.encode_vectors({"tok_canny_edge": edge[None].astype(np.float32)}, "edge")["tok_canny_edge"]
        assert ids[0].tolist() == row["tok_canny_edge"]


def test_feature_grid_crop_is_exact_on_the_whole_grid_and_a_window_otherwise():
    features = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    assert np.array_equal(crop_feature_grid(features, (0, 0, 32, 32), (32, 32), 2), features.transpose(2, 0, 1))
    wide = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)  # a 32x64 image's 2x4 grid
    assert np.array_equal(crop_feature_grid(wide, (32, 0, 64, 32), (32, 64), 2), wide[:, 2:].transpose(2, 0, 1))
    window = crop_feature_grid(wide, (8, 0, 40, 32), (32, 64), 2)  # half a patch off the grid: interpolated
    assert window.shape == (3, 2, 2) and not np.array_equal(window, wide[:, :2].transpose(2, 0, 1))


def test_a_cut_mask_box_keeps_the_part_inside_the_crop():
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 32:] = 1  # right half of the box is the instance
    box, cut = crop_box_and_mask([0.0, 0.0, 1.0, 1.0], mask, (64, 64), (32, 0, 64, 64), "test")
    assert np.allclose(box, [0, 0, 1, 1]) and cut.all()  # the crop keeps the right half: all instance
    assert crop_box_and_mask([0.0, 0.0, 0.25, 0.25], mask, (64, 64), (32, 32, 64, 64), "test") is None


def test_kill_and_resume_gives_the_uninterrupted_corpus(workdir, processor_dir, corpus):
    out = workdir / "killed"
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from fourm_hf.cli import main\n"
              f"main(['build-corpus', '--dataset', {str(workdir / 'labelled')!r}, '--processor', {str(processor_dir)!r}, "
              f"'--out', {str(out)!r}, '--crops', '{CROPS}', '--batch-size', '1', '--shard-size', '1', '--seed', '3', "
              "'--crop', 'random'])\n")
    env = {**subprocess_env(), "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out.parent / f"{out.name}.shards"
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None and len([p for p in shards.glob("shard-*") if ".tmp" not in p.name]) < 2:
        time.sleep(0.2)
    assert child.poll() is None, f"the child ended before the kill: {child.stderr.read().decode()[-2000:]}"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "build_corpus.json").exists()
    assert cli_main(["build-corpus", "--dataset", str(workdir / "labelled"), "--processor", str(processor_dir),
                     "--out", str(out), "--crops", str(CROPS), "--batch-size", "1", "--shard-size", "1", "--seed", "3"]) == 0
    resumed = load_from_disk(str(out))
    assert resumed.features == corpus.features
    for name in corpus.column_names:  # batches of 1 vs 2: the same ids and arrays
        assert resumed[name] == corpus[name], name


def test_sequence_tokenizers_join_a_processor_folder_from_the_command_line(workdir, processor, corpus, capsys):
    plain = workdir / "plain_processor"
    FourMProcessor(processor.image_processor, processor.tokenizer, vqvaes=processor.vqvaes).save_pretrained(plain)
    folders = _fixture_folders()
    args = ["build-corpus", "--dataset", str(workdir / "labelled"), "--processor", str(plain), "--crops", str(CROPS),
            "--batch-size", "2", "--shard-size", "2", "--seed", "3", "--modalities", "sam_instance", "human_poses"]
    assert cli_main([*args, "--out", str(workdir / "plain_corpus")]) == 2  # no tokenizer for them in the folder
    assert "no sam_instance tokenizer" in capsys.readouterr().err
    assert cli_main([*args, "--out", str(workdir / "plain_corpus"), "--sequence-tokenizers",
                     f"sam_instance={folders['sam_instance']}", f"human_poses={folders['human_poses']}"]) == 0
    built = load_from_disk(str(workdir / "plain_corpus"))
    assert built["sam_instance"] == corpus["sam_instance"] and built["human_poses"] == corpus["human_poses"]
    assert cli_main([*args, "--out", str(workdir / "bad0"), "--sequence-tokenizers", f"tok_rgb={folders['tok_rgb']}"]) == 2
    assert "this option takes the human_poses / sam_instance tokenizers" in capsys.readouterr().err


def test_the_pseudo_label_output_builds_a_corpus(workdir, processor_dir, processor):
    """pseudo-label's model-free 4M-21 labellers (canny_edge, color_palette, metadata) -> build-corpus."""
    photos = workdir / "photos"
    photos.mkdir()
    for index, rgb in enumerate(_photos()[:2]):
        PILImage.fromarray(rgb).save(photos / f"{index}.png")
    assert cli_main(["pseudo-label", "--images", str(photos), "--out", str(workdir / "pl"), "--size", str(SOURCE),
                     "--canny", "--color-palette", "--metadata", "--no-normals"]) == 0
    assert cli_main(["build-corpus", "--dataset", str(workdir / "pl"), "--processor", str(processor_dir),
                     "--out", str(workdir / "pl_corpus"), "--crops", "2", "--seed", "1"]) == 0
    built = load_from_disk(str(workdir / "pl_corpus"))
    assert {"tok_rgb", "tok_canny_edge", "color_palette", "metadata", "rgb_image"} <= set(built.column_names)
    labelled = load_from_disk(str(workdir / "pl"))
    for row, decoded in zip(built, decode_sequences(processor.tokenizer, "metadata", built["metadata"],
                                                    metadata_keys=list(METADATA_KEYS))):
        assert decoded["data"] == json.loads(labelled[row["source_index"]]["metadata"])


def test_training_format_and_streaming_read_the_new_columns(corpus_dir):
    row = load_corpus(corpus_dir)[0]
    assert row["t5_caption"].dtype == np.float32 and row["sam_instance"].dtype == np.int64
    streamed = next(iter(load_corpus(corpus_dir, streaming=True)))
    assert np.array_equal(streamed["tok_dinov2"], row["tok_dinov2"])
    shards = write_parquet_shards(corpus_dir, corpus_dir.parent / "parquet", shard_size=4)  # the mixtures' format
    from_parquet = next(iter(open_parquet_shards(str(shards))))
    for name in ("t5_caption", "sam_instance", "tok_dinov2", "metadata"):
        assert np.array_equal(from_parquet[name], row[name]), name


# ---- bad input ------------------------------------------------------------------------------------------
def test_a_column_the_processor_cannot_tokenize_is_named(workdir, dataset, processor):
    without = FourMProcessor(processor.image_processor, processor.tokenizer,
                             vqvaes={k: v for k, v in processor.vqvaes.items() if k != "tok_dinov2"})
    with pytest.raises(ValueError, match=r"--modalities tok_dinov2: the dataset has its column 'dinov2' but the processor "
                                         r"has no feature tokenizer for tok_dinov2"):
        build_corpus(dataset, without, workdir / "bad1", modalities=["tok_rgb", "tok_dinov2"], **BUILD)
    with pytest.raises(ValueError, match=r"--modalities sam_instance: .* no sam_instance tokenizer"):
        build_corpus(dataset, without, workdir / "bad1", modalities=["sam_instance"], **BUILD)
    with pytest.raises(ValueError, match=r"--modalities tok_nothing: not a corpus column"):
        build_corpus(dataset, processor, workdir / "bad1", modalities=["tok_nothing"], **BUILD)
    code = cli_main(["build-corpus", "--dataset", str(workdir / "labelled"), "--processor", str(workdir / "processor"),
                     "--out", str(workdir / "bad1"), "--modalities", "tok_nothing"])
    assert code == 2


def test_a_dataset_without_rgb_is_refused(workdir, dataset, processor):
    with pytest.raises(ValueError, match=r"no 'rgb' column; the shared crop .* is chosen on its rgb image"):
        build_corpus(dataset.remove_columns("rgb"), processor, workdir / "bad2", **BUILD)


@pytest.mark.parametrize("broken, message", [
    ({"point": [0.5, 0.5], "masks": [{"box": [0.1, 0.1, 0.5, 0.5], "mask": b"\x00" * 7}]}, r"'mask' must be 512 packed bytes"),
    ({"point": [0.5, 0.5], "masks": [{"box": [0.6, 0.1, 0.5, 0.5], "mask": b"\x00" * 512}]}, r"xmin > xmax"),
    ({"point": [1.5, 0.5], "masks": []}, r"outside \[0, 1\]"),
])
def test_malformed_sam_instance_names_the_row_and_field(tmp_path, dataset, processor, broken, message):
    rows = dataset.select(range(1)).to_list()
    rows[0]["sam_instance"] = [broken]
    bad = Dataset.from_list(rows, features=FEATURES)
    with pytest.raises(ValueError, match=rf"row 0 column 'sam_instance'\[0\].*{message}"):
        build_corpus(bad, processor, tmp_path / "out", modalities=["sam_instance"], **BUILD)


@pytest.mark.parametrize("column, value, message", [
    ("metadata", json.dumps({"no_such_key": 1}), r"unknown metadata key 'no_such_key'"),
    ("metadata", "{not json", r"not JSON"),
    ("color_palette", [[1, 2]], r"a colour is 3 integer bins"),
])
def test_malformed_palette_and_metadata_name_the_row(tmp_path, dataset, processor, column, value, message):
    rows = dataset.select(range(1)).to_list()
    rows[0][column] = value
    features = Features({**FEATURES, "color_palette": List(List(Value("int32")))})
    with pytest.raises(ValueError, match=rf"row 0 column '{column}': {message}"):
        build_corpus(Dataset.from_list(rows, features=features), processor, tmp_path / "out", modalities=[column], **BUILD)


def test_feature_maps_of_another_width_are_refused(workdir, dataset, processor):
    rows = dataset.select(range(1)).to_list()
    features = Features({**FEATURES, "clip": Array3D((3, 3, 8), "float16")})
    rows[0]["clip"] = np.zeros((3, 3, 8), dtype=np.float16)
    bad = Dataset.from_list(rows, features=features)
    with pytest.raises(ValueError, match=r"column 'clip': expected a finite \(h, w, 512\) feature map"):
        build_corpus(bad, processor, workdir / "bad4", modalities=["tok_clip"], **BUILD)


assert SHARED_DIR  # the fixtures are found under ../shared (tests skip through shared_path when it is absent)


def test_a_row_of_more_sam_points_than_fit_keeps_an_evenly_spread_subset(processor):
    """SAM's 7x7 query grid gives ~21 ids per masked point: far more than the 290 ids the model reads."""
    from fourm_hf.data.corpus_columns import _fit_sam_points
    from fourm_hf.text.sequence_modalities import SEQUENCE_MAX_LENGTHS

    points = [{"point": (i % 7, i // 7), "masks": [{"box": (0, 0, 1, 1), "token_ids": list(range(16))}]} for i in range(49)]
    kept = _fit_sam_points(processor.tokenizer, points)
    assert 1 < len(kept) < len(points) and kept[0] is points[0] and kept[-1] is points[-1]
    ids = processor(sam_instance=[kept], return_tensors="np")["sam_instance"][0]
    assert len(ids[ids != 0]) <= SEQUENCE_MAX_LENGTHS["sam_instance"]
    with pytest.raises(ValueError, match="exceed max_length"):
        processor(sam_instance=[points])
    assert _fit_sam_points(processor.tokenizer, points[:3]) == points[:3] and _fit_sam_points(processor.tokenizer, []) == []
