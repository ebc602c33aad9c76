"""The model-backed 4M-21 labellers: sam_instance (+ sam_edge), dinov2 (+ dinov2_global), human_poses.

Tiny random SamModel / Dinov2Model of the real architectures are built here and saved to tmp folders;
the images are scikit-image's photographs, made small.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fourm_hf.data import pseudo_label as pl
from fourm_hf.data.pseudo_label.derived.sam_edge import instance_edges
from fourm_hf.data.pseudo_label.labellers.human_poses import HUMAN_POSE_FIELDS
from fourm_hf.data.pseudo_label.labellers.sam_instance import (
    SAM_MASK_SIZE, instance_entries, pack_instance_mask, query_points, unpack_instance_mask,
)
from fourm_hf.text.text_serialization import SamMask, SamPoint, parse_sam_instances, serialize_sam_instances

from conftest import SHARED_DIR
from test_pseudo_label import _assert_same_dataset, _processor

SIZE = 32
SAM_ARGS = dict(sam_points_per_side=4, sam_query_points_per_side=5, sam_pred_iou_thresh=0.0, sam_stability_score_thresh=0.0)
SAM_TOKENIZER = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m")) / "tokenizers" / "sam_instance_vqvae"


def build_tiny_sam_and_dinov2(root: str, dinov2_width: int = 32) -> dict:
    """Tiny random SamModel and Dinov2Model (``dinov2_width`` wide; + their PIL image processors) saved under ``root``."""
    import transformers as T

    torch.manual_seed(0)
    vision = T.SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16,
                               output_channels=16, window_size=2, global_attn_indexes=[1], mlp_dim=64, num_pos_feats=8, initializer_range=0.5)
    prompt = T.SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4)
    decoder = T.SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16)
    sam = T.SamModel(T.SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                                 mask_decoder_config=decoder.to_dict()))
    sam_processor = _processor("SamImageProcessor", size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                               mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    dinov2 = T.Dinov2Model(T.Dinov2Config(hidden_size=dinov2_width, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                          patch_size=8, image_size=32))
    dinov2_processor = _processor("BitImageProcessor", size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    paths = {}
    for name, model, processor in (("sam", sam, sam_processor), ("dinov2", dinov2, dinov2_processor)):
        paths[name] = os.path.join(root, name)
        model.save_pretrained(paths[name])
        processor.save_pretrained(paths[name])
    return paths


def write_photos(folder) -> list[str]:
    """scikit-image's photographs, resized to a few small sizes, as PNGs in ``folder``."""
    from skimage import data

    os.makedirs(folder, exist_ok=True)
    names = []
    for i, (name, size) in enumerate([("astronaut", (48, 40)), ("coffee", (40, 32)), ("chelsea", (36, 36)), ("camera", (32, 48))]):
        Image.fromarray(getattr(data, name)()).resize(size, Image.Resampling.BILINEAR).save(os.path.join(folder, f"{i:02d}_{name}.png"))
        names.append(f"{i:02d}_{name}.png")
    return names


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_tiny_sam_and_dinov2(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder)
    return str(folder)


@pytest.fixture(scope="module")
def labellers(models):
    return pl.build_labellers(sam_model=models["sam"], dinov2_model=models["dinov2"], batch_size=2, **SAM_ARGS)


@pytest.fixture(scope="module")
def labelled(labellers, photo_dir):
    return pl.pseudo_label_dataset(photo_dir, Path(photo_dir).parent / "labelled", labellers, size=SIZE, batch_size=2, shard_size=4)


# ------------------------------------------------------------------------------------------------
# Column format helpers
# ------------------------------------------------------------------------------------------------

def test_pack_and_unpack_instance_masks():
    rng = np.random.default_rng(0)
    mask = rng.random((SAM_MASK_SIZE, SAM_MASK_SIZE)) > 0.5
    packed = pack_instance_mask(mask)
    assert isinstance(packed, bytes) and len(packed) == 512 and packed == np.packbits(mask).tobytes()
    unpacked = unpack_instance_mask(packed)
    assert unpacked.dtype == np.uint8 and unpacked.shape == (64, 64)
    np.testing.assert_array_equal(unpacked, mask.astype(np.uint8))
    with pytest.raises(ValueError, match=r"must be \(64, 64\)"):
        pack_instance_mask(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="512 bytes, got 3"):
        unpack_instance_mask(b"abc")


def test_instance_entries_of_known_masks():
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, 4:12, 8:24] = True  # a 16 x 8 rectangle
    masks[1, 0:32, 0:16] = True  # the left half
    assert query_points(3, 32).tolist() == [[8, 8], [16, 8], [24, 8], [8, 16], [16, 16], [24, 16], [8, 24], [16, 24], [24, 24]]
    entries = instance_entries(masks, query_points_per_side=3)
    assert [e["point"] for e in entries][:2] == [[8.5 / 32, 8.5 / 32], [16.5 / 32, 8.5 / 32]]
    assert [len(e["masks"]) for e in entries] == [2, 1, 0, 1, 0, 0, 1, 0, 0]
    rectangle, half = entries[0]["masks"]
    assert rectangle["box"] == [8 / 32, 4 / 32, 24 / 32, 12 / 32] and half["box"] == [0.0, 0.0, 0.5, 1.0]
    assert unpack_instance_mask(rectangle["mask"]).all() and unpack_instance_mask(half["mask"]).all()
    hole = masks[1].copy()
    hole[8:24, 4:12] = False
    ring = unpack_instance_mask(instance_entries(hole[None], 3)[6]["masks"][0]["mask"])
    assert ring[:16].all() and not ring[16:48, 16:48].any() and ring[48:].all()  # nearest resize keeps the hole in place


def test_instance_edges_are_inner_boundaries():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 2:5, 2:6] = True
    masks[1, :, :] = True  # the whole image: no edge (the image border is not an edge)
    edges = instance_edges(masks, (8, 8))
    expected = masks[0].copy()
    expected[3, 3:5] = False
    np.testing.assert_array_equal(edges, expected.astype(np.uint8))
    assert instance_edges(np.zeros((0, 8, 8), bool), (8, 8)).sum() == 0
    with pytest.raises(ValueError, match=r"expected \(N, 8, 8\)"):
        instance_edges(np.zeros((1, 4, 4), bool), (8, 8))


# ------------------------------------------------------------------------------------------------
# The labelled dataset
# ------------------------------------------------------------------------------------------------

def _sam_tokenizer():
    if not (SAM_TOKENIZER / "config.json").is_file():
        return None
    from fourm_hf import FourMTokenizerModel

    return FourMTokenizerModel.from_pretrained(SAM_TOKENIZER).eval()


def _instance_text(entries, tokenizer, bins: int = 1000):
    """The column value -> 4M-21 instance text: coordinates binned, masks through the SAM tokenizer (or a stand-in)."""
    masks = [unpack_instance_mask(m["mask"]) for e in entries for m in e["masks"]]
    if tokenizer is not None and masks:
        with torch.no_grad():
            ids = tokenizer.encode(torch.tensor(np.stack(masks), dtype=torch.float32)[:, None]).reshape(len(masks), -1).tolist()
    else:  # deterministic stand-in: 16 ids from the mask's 4x4 block sums
        ids = [(m.reshape(4, 16, 4, 16).sum(axis=(1, 3)).ravel() % 1024).tolist() for m in masks]
    ids, points = iter(ids), []
    for entry in entries:
        point = tuple(int(round(v * (bins - 1))) for v in entry["point"])
        points.append(SamPoint(point, [SamMask(tuple(int(round(v * (bins - 1))) for v in m["box"]), next(ids)) for m in entry["masks"]]))
    return points, serialize_sam_instances(points)


def test_sam_instance_column_becomes_instance_text_that_parses_back(labelled):
    from datasets import Array2D

    tokenizer = _sam_tokenizer()
    assert labelled.features["sam_edge"] == Array2D((SIZE, SIZE), "uint8")
    total_masks = 0
    for row in labelled:
        entries = row["sam_instance"]
        assert len(entries) == 25
        for entry in entries:
            assert len(entry["point"]) == 2 and all(0 < v < 1 for v in entry["point"])
            for mask in entry["masks"]:
                xmin, ymin, xmax, ymax = mask["box"]
                assert 0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1
                unpacked = unpack_instance_mask(mask["mask"])
                assert unpacked.shape == (64, 64) and set(np.unique(unpacked)) <= {0, 1} and unpacked.any()
                total_masks += 1
        points, text = _instance_text(entries, tokenizer)
        assert parse_sam_instances(text) == points
        if tokenizer is not None:
            assert all(0 <= i < tokenizer.config.vocab_size for p in points for m in p.masks for i in m.token_ids)
        edges = np.asarray(row["sam_edge"])
        assert edges.shape == (SIZE, SIZE) and set(np.unique(edges)) <= {0, 1}  # stored as uint8 (feature checked above)
    assert total_masks > 0


def test_sam_edges_lie_on_the_instance_masks(models, photo_dir):
    labellers = pl.build_labellers(sam_model=models["sam"], batch_size=2, **SAM_ARGS)
    images = [Image.open(p).convert("RGB").resize((SIZE, SIZE)) for p in sorted(Path(photo_dir).glob("*.png"))]
    labels = {}
    for labeller in labellers:
        labels.update(labeller.label(images, labels))
    for masks, edges in zip(labels["_sam_instance_masks"], labels["sam_edge"]):
        assert masks.shape[1:] == (SIZE, SIZE) and masks.dtype == bool
        assert not (edges.astype(bool) & ~masks.any(axis=0)).any()
        np.testing.assert_array_equal(edges, instance_edges(masks, (SIZE, SIZE)))


def test_dinov2_grid_and_global_match_a_direct_model_call(models, labelled):
    import transformers as T
    from datasets import Array3D, List, Value

    model = T.Dinov2Model.from_pretrained(models["dinov2"]).eval()
    processor = T.AutoImageProcessor.from_pretrained(models["dinov2"])
    row = labelled.with_format("numpy")[0]
    image = labelled[0]["rgb"]
    with torch.no_grad():
        out = model(**processor(images=[image], return_tensors="pt"))
    grid, global_ = row["dinov2"], row["dinov2_global"]
    assert grid.shape == (4, 4, 32) and global_.shape == (32,)  # a 32 px crop, patch 8
    assert labelled.features["dinov2"] == Array3D((4, 4, 32), "float16")
    assert labelled.features["dinov2_global"] == List(Value("float16"), length=32)
    np.testing.assert_allclose(grid, out.last_hidden_state[0, 1:].reshape(4, 4, 32).numpy(), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(global_, out.pooler_output[0].numpy(), atol=2e-3, rtol=2e-3)
    meta = pl.load_metadata(Path(labelled.cache_files[0]["filename"]).parent)
    assert meta["labellers"]["sam_instance"]["points_per_side"] == 4
    assert meta["labellers"]["dinov2,dinov2_global"]["model"] == models["dinov2"]


def test_killed_process_resumes_to_the_same_dataset(models, labellers, labelled, photo_dir, tmp_path):
    from test_pseudo_label import label_until_killed

    out = tmp_path / "out"
    label_until_killed(f"pl.build_labellers(sam_model={models['sam']!r}, dinov2_model={models['dinov2']!r}, batch_size=2, "
                       f"**{SAM_ARGS!r})", photo_dir, out, SIZE)
    resumed = pl.pseudo_label_dataset(photo_dir, out, labellers, size=SIZE, batch_size=2, shard_size=2)
    _assert_same_dataset(resumed, labelled)


# ------------------------------------------------------------------------------------------------
# human_poses: the missing labeller, and the pass-through
# ------------------------------------------------------------------------------------------------

def _person(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rotations = [np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(24)]
    rotations = [r * np.sign(np.linalg.det(r)) for r in rotations]  # determinant +1
    return {"box": [0.1, 0.2, 0.5, 0.9], "global_orientation": rotations[0].ravel().tolist(),
            "body_pose": np.concatenate([r.ravel() for r in rotations[1:]]).tolist(), "camera": [0.9, 0.0, 0.1],
            "shape": rng.normal(size=10).tolist()}


def _dataset_with_poses(folder, poses) -> str:
    """A saved dataset of photographs (``image``) with a ``human_poses`` column, at ``folder``."""
    from datasets import Dataset, Image as ImageFeature

    write_photos(Path(folder).parent / "photos")
    photos = sorted((Path(folder).parent / "photos").glob("*.png"))[: len(poses)]
    Dataset.from_dict({"image": [str(p) for p in photos], "human_poses": poses}).cast_column("image", ImageFeature()).save_to_disk(str(folder))
    return str(folder)


def test_human_poses_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"4D-Humans.*no SMPL regressor.*licence.*'human_poses' column.*--human-poses-from-input"):
        pl.build_labellers(human_poses_model="some/model")


def test_human_poses_pass_through_is_validated(tmp_path):
    poses = [[_person(0), _person(1)], []]
    source = _dataset_with_poses(tmp_path / "in", poses)
    labellers = pl.build_labellers(human_poses_from_input=True)
    dataset = pl.pseudo_label_dataset(source, tmp_path / "out", labellers, size=SIZE)
    assert dataset.features["human_poses"] == pl.labellers.human_poses.human_poses_feature()
    assert len(dataset[0]["human_poses"]) == 2 and dataset[1]["human_poses"] == []
    for name, count in HUMAN_POSE_FIELDS.items():
        np.testing.assert_allclose(dataset[0]["human_poses"][1][name], poses[0][1][name], atol=1e-6)
        assert len(dataset[0]["human_poses"][0][name]) == count


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("camera"), r"expected a dict with fields"),
    (lambda p: p.update(shape=[0.0] * 9), r"field 'shape' must be 10 finite numbers"),
    (lambda p: p.update(box=[0.5, 0.2, 0.1, 0.9]), r"field 'box' must be \(xmin, ymin, xmax, ymax\)"),
    (lambda p: p.update(global_orientation=[2.0] + [0.0] * 8), r"field 'global_orientation': expected rotation matrices"),
    (lambda p: p.update(camera=[float("nan"), 0.0, 0.0]), r"field 'camera' must be 3 finite numbers"),
])
def test_malformed_human_poses_column_names_the_image_and_field(tmp_path, change, message):
    person = _person()
    change(person)
    source = _dataset_with_poses(tmp_path / "in", [[person]])
    with pytest.raises(ValueError, match=r"human_poses of image '0', person 0: " + message):
        pl.pseudo_label_dataset(source, tmp_path / "out", pl.build_labellers(human_poses_from_input=True), size=SIZE)


def test_human_poses_pass_through_needs_the_input_column(photo_dir, tmp_path):
    with pytest.raises(ValueError, match=r"reads the input dataset's 'human_poses' column, but --images .* has no such column"):
        pl.pseudo_label_dataset(photo_dir, tmp_path / "out", pl.build_labellers(human_poses_from_input=True), size=SIZE)


# ------------------------------------------------------------------------------------------------
# Unhappy paths and the CLI
# ------------------------------------------------------------------------------------------------

def test_wrong_models_and_settings_are_clear_errors(models, tmp_path):
    with pytest.raises(ValueError, match=r"sam_instance: model .* is a Dinov2Model, not a model for the 'mask-generation' task"):
        pl.build_labellers(sam_model=models["dinov2"])
    with pytest.raises(ValueError, match=r"dinov2: model .* is a 'sam' model, expected a DINOv2 model"):
        pl.build_labellers(dinov2_model=models["sam"])
    with pytest.raises(ValueError, match=r"sam_instance: cannot load model .*nowhere"):
        pl.build_labellers(sam_model=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"dinov2: cannot load model .*nowhere"):
        pl.build_labellers(dinov2_model=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="points_per_side must be an integer >= 1, got 0"):
        pl.build_labellers(sam_model=models["sam"], sam_points_per_side=0)
    with pytest.raises(ValueError, match=r"pred_iou_thresh must be in \[0, 1\], got 1.5"):
        pl.build_labellers(sam_model=models["sam"], sam_pred_iou_thresh=1.5)
    with pytest.raises(ValueError, match="sam_edge: edges are drawn from the SAM instance masks"):
        pl.derived.sam_edge.SamEdgeLabeller().label([Image.new("RGB", (8, 8))], {})


def test_cli(models, photo_dir, tmp_path, capsys):
    from fourm_hf.cli import main

    code = main(["pseudo-label", "--images", photo_dir, "--out", str(tmp_path / "out"), "--sam-model", models["sam"],
                 "--sam-points-per-side", "2", "--sam-query-points-per-side", "2", "--sam-pred-iou-thresh", "0",
                 "--sam-stability-thresh", "0", "--no-sam-edges", "--dinov2-model", models["dinov2"], "--size", "32"])
    assert code == 0
    assert "columns ['rgb', 'source', 'sam_instance', 'dinov2', 'dinov2_global']" in capsys.readouterr().out
    params = json.loads((tmp_path / "out" / "pseudo_label.json").read_text())
    assert params["labellers"]["sam_instance"]["query_points_per_side"] == 2
    code = main(["pseudo-label", "--images", photo_dir, "--out", str(tmp_path / "bad"), "--human-poses-model", "x/y"])
    assert code == 2 and "4D-Humans" in capsys.readouterr().err
