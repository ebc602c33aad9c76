"""fourm-hf evaluate: held-out scenes, predictors (truth, tokenizer ceiling, trivial baseline, pipeline),
scoring wired to the exact truth, the report table, and clear errors on bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fourm_hf.data.scenes import COLORS, SCENE_CLASSES, SHAPES, make_scene_dataset, render_scene, scene_seed
from fourm_hf.evaluation import report
from fourm_hf.evaluation.heldout import HELDOUT_DATASET_SEED, check_not_heldout, heldout_scenes
from fourm_hf.evaluation.predictors import TARGETS, TokenizerCeiling, TrainStatistics, TrivialBaseline, TruthPredictor
from fourm_hf.evaluation.scoring import COLUMNS, evaluate_predictor, markdown_table, score_predictions

SIZE = 32
NUM_SCENES = 4
ALL_COLUMNS = [key for target in TARGETS for key, _, _ in COLUMNS[target]]


def _tiny_checkpoint(folder, scenes):
    """A random tiny FourM model + FourMProcessor (tiny VQ-VAEs, a small text tokenizer) saved side by side."""
    from fourm_hf.configuration_fourm import FourMConfig
    from fourm_hf.modalities import get_modality
    from fourm_hf.modeling.modeling_fourm import FourMModel
    from fourm_hf.testing_utils import tiny_config, tiny_vqvae
    from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
    from fourm_hf.processing.processing_fourm import FourMProcessor
    from fourm_hf.text.tokenization_fourm import train_text_tokenizer

    labels = [f"{colour} {shape}" for colour in COLORS for shape in SHAPES]
    tokenizer = train_text_tokenizer([s["caption"] for s in scenes], vocab_size=60, class_names=labels,
                                     num_sentinels=8, coord_bins=128)
    base = tiny_config()
    vqvaes, specs = {}, dict(base.modality_specs)
    for seed, kind in enumerate(("rgb", "depth", "normal", "semseg")):
        name = f"tok_{kind}"
        vqvaes[name] = tiny_vqvae(kind, image_size=SIZE, patch_size=8, seed=seed, vocab_size=256)
        specs[name] = {**specs[name], "vocab_size": 256}
    for name, max_length in (("caption", 48), ("det", 8)):  # held-out captions fit; short box generations
        specs[name] = get_modality(name).replace(vocab_size=len(tokenizer), max_length=max_length).to_dict()
    config = FourMConfig(**{**base.to_dict(), "modality_specs": specs})
    image_processor = FourMImageProcessor(image_size=SIZE, num_semseg_classes=len(SCENE_CLASSES))
    FourMModel(config).save_pretrained(folder)
    FourMProcessor(image_processor, tokenizer, vqvaes=vqvaes, max_text_length=128).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scenes():
    return heldout_scenes(NUM_SCENES, SIZE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, scenes):
    return _tiny_checkpoint(tmp_path_factory.mktemp("tiny-4m"), scenes)


@pytest.fixture(scope="module")
def processor(checkpoint):
    from fourm_hf.processing.processing_fourm import FourMProcessor

    return FourMProcessor.from_pretrained(str(checkpoint))


# ---- held-out set --------------------------------------------------------------------------------------
def test_heldout_scenes_are_fixed_and_not_training_scenes(scenes):
    assert [s["seed"] for s in scenes] == [scene_seed(HELDOUT_DATASET_SEED, i) for i in range(NUM_SCENES)]
    again = render_scene(scenes[2]["seed"], SIZE)
    np.testing.assert_array_equal(again["rgb"], scenes[2]["rgb"])
    training_seeds = {scene_seed(dataset_seed, i) for dataset_seed in range(4) for i in range(1000)}
    assert not training_seeds & {s["seed"] for s in scenes}
    with pytest.raises(ValueError, match="num_scenes"):
        heldout_scenes(0, SIZE)


def test_dataset_made_with_the_heldout_seed_is_refused(tmp_path):
    (tmp_path / "make_scenes.json").write_text(json.dumps({"num": 3, "size": 32, "seed": HELDOUT_DATASET_SEED}))
    with pytest.raises(ValueError, match="held-out seed"):
        check_not_heldout(tmp_path)


# ---- scoring is wired to the truth -----------------------------------------------------------------------
def test_truth_predictor_scores_perfectly(scenes):
    row = evaluate_predictor(TruthPredictor(), scenes, batch_size=3)
    scores = row["scores"]
    assert sorted(scores) == sorted(ALL_COLUMNS)
    assert scores["depth_abs_rel"] == 0.0 and scores["depth_rmse"] == 0.0 and scores["depth_delta1"] == 1.0
    assert scores["normal_mean_angle"] < 0.05 and scores["normal_pct_11_25"] == 100.0
    assert scores["semseg_pixel_accuracy"] == 1.0 and scores["semseg_miou"] == 1.0
    assert scores["det_map50"] == pytest.approx(1.0)  # COCO AP: a mean of 101 precisions
    assert scores["caption_bleu4"] == pytest.approx(1.0) and scores["caption_object_f1"] == 1.0


def test_a_wrong_prediction_scores_below_perfect(scenes):
    class ShiftedTruth(TruthPredictor):
        def predict(self, batch, target):
            predictions = super().predict(batch, target)
            if target == "depth":
                return [p * 1.5 for p in predictions]
            if target == "semseg":
                return [np.full_like(p, 1) for p in predictions]  # everything is floor
            if target == "det":
                return [p[1:] for p in predictions]  # the first object is missed
            return predictions

    scores = evaluate_predictor(ShiftedTruth(["depth", "semseg", "det"]), scenes)["scores"]
    assert scores["depth_delta1"] == 0.0 and scores["depth_abs_rel"] == pytest.approx(0.5, abs=1e-6)
    floor_fraction = np.mean([np.mean(s["semseg"] == 1) for s in scenes])
    assert scores["semseg_pixel_accuracy"] == pytest.approx(floor_fraction)
    assert 0.0 < scores["det_map50"] < 1.0


# ---- trivial baseline --------------------------------------------------------------------------------
def _map_scene(depth, semseg, normal_z=-1.0, caption="a large red cube.", boxes=None):
    depth = np.asarray(depth, np.float32)
    normal = np.zeros(depth.shape + (3,), np.float32)
    normal[..., 2] = normal_z
    return {"depth": depth, "semseg": np.asarray(semseg, np.uint8), "normal": normal, "caption": caption,
            "boxes": boxes or [{"label": "red cube", "box": [0.0, 0.0, 0.5, 0.5]}]}


def test_trivial_baseline_matches_hand_computation():
    training = [_map_scene([[1, 2], [4, 8]], [[0, 1], [2, 2]]), _map_scene([[3, 2], [4, 4]], [[0, 1], [3, 3]]),
                _map_scene([[2, 2], [4, 6]], [[0, 2], [3, 2]])]
    statistics = TrainStatistics.from_scenes(training)
    np.testing.assert_allclose(statistics.mean_depth, [[2, 2], [4, 6]])
    # pixel (1, 1): classes 2, 3, 2 -> 2; pixel (1, 0): 2, 3, 3 -> 3; pixel (0, 1): 1, 1, 2 -> 1
    np.testing.assert_array_equal(statistics.most_frequent_class, [[0, 1], [3, 2]])
    assert statistics.num_scenes == 3

    held_out = [_map_scene([[2, 4], [4, 4]], [[0, 1], [2, 2]])]
    baseline = TrivialBaseline(statistics)
    scores = score_predictions({t: baseline.predict(held_out, t) for t in TARGETS}, held_out)
    # |2-2|/2, |2-4|/4, |4-4|/4, |6-4|/4 -> mean 0.25; ratios 1, 2, 1, 1.5 -> half under 1.25
    assert scores["depth_abs_rel"] == pytest.approx(0.25)
    assert scores["depth_rmse"] == pytest.approx(math.sqrt(2.0))
    assert scores["depth_delta1"] == pytest.approx(0.5)
    assert scores["normal_mean_angle"] == pytest.approx(0.0, abs=1e-3)
    # truth [[0,1],[2,2]] vs [[0,1],[3,2]]: 3 of 4 right; IoU sky 1, floor 1, sphere 1/2, cube 0/1
    assert scores["semseg_pixel_accuracy"] == pytest.approx(0.75)
    assert scores["semseg_miou"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert scores["det_map50"] == 0.0 and scores["caption_bleu4"] == 0.0 and scores["caption_object_f1"] == 0.0


def test_train_statistics_from_a_dataset_equal_those_of_its_scenes(tmp_path):
    dataset = make_scene_dataset(num=3, size=SIZE, out_dir=tmp_path / "scenes", seed=5)
    from_dataset = TrainStatistics.from_dataset(tmp_path / "scenes", SIZE)
    from_scenes = TrainStatistics.from_scenes([render_scene(seed, SIZE) for seed in dataset["seed"]])
    np.testing.assert_allclose(from_dataset.mean_depth, from_scenes.mean_depth, rtol=1e-5)
    np.testing.assert_allclose(from_dataset.mean_normal, from_scenes.mean_normal, atol=1e-5)
    np.testing.assert_array_equal(from_dataset.class_counts, from_scenes.class_counts)
    with pytest.raises(ValueError, match="no column"):
        TrainStatistics.from_dataset(_dataset_without_depth(tmp_path), SIZE)


def _dataset_without_depth(tmp_path):
    import datasets

    folder = tmp_path / "captions-only"
    datasets.Dataset.from_dict({"caption": ["a red cube."]}).save_to_disk(str(folder))
    return folder


# ---- tokenizer ceiling -----------------------------------------------------------------------------------
def test_tokenizer_ceiling_round_trips_text_and_boxes_and_decodes_maps(processor, scenes):
    ceiling = TokenizerCeiling(processor)
    assert ceiling.targets == TARGETS
    captions = ceiling.predict(scenes, "caption")
    assert [c.replace(" .", ".") for c in captions] == [s["caption"] for s in scenes]
    boxes = ceiling.predict(scenes, "det")
    for predicted, scene in zip(boxes, scenes):
        assert sorted(b["label"] for b in predicted) == sorted(b["label"] for b in scene["boxes"])
        assert all(b["score"] == 1.0 for b in predicted)
    depth = ceiling.predict(scenes[:2], "depth")
    expected = processor.decode(processor(depth=[s["depth"] for s in scenes[:2]], flip=False))["tok_depth"]["array"]
    np.testing.assert_array_equal(np.stack(depth), expected)
    assert depth[0].shape == (SIZE, SIZE) and depth[0].dtype == np.float32

    scores = evaluate_predictor(ceiling, scenes)["scores"]
    assert scores["caption_object_f1"] == 1.0 and scores["det_map50"] == pytest.approx(1.0)
    assert all(math.isfinite(scores[key]) for key in ALL_COLUMNS)
    with pytest.raises(ValueError, match="expected 32x32"):
        ceiling.predict([render_scene(scenes[0]["seed"], 40)], "depth")


def test_table_has_every_row_and_column(processor, scenes):
    statistics = TrainStatistics.from_scenes(scenes)
    rows = [evaluate_predictor(p, scenes) for p in
            (TruthPredictor(), TokenizerCeiling(processor), TrivialBaseline(statistics), TruthPredictor(["depth"], name="specialist (depth)"))]
    table = markdown_table(rows, TARGETS).splitlines()
    assert len(table) == 2 + len(rows)
    headers = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert headers == ["model"] + [header for t in TARGETS for _, header, _ in COLUMNS[t]]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["truth", "tokenizer ceiling", "trivial baseline", "specialist (depth)"]
    specialist_cells = [cell.strip() for cell in table[-1].strip("|").split("|")][1:]
    assert specialist_cells[:3] == ["0.000", "0.000", "1.000"] and set(specialist_cells[3:]) == {"–"}


# ---- bad input -------------------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors(tmp_path, checkpoint):
    from fourm_hf.testing_utils import tiny_config

    model_only = tmp_path / "model-only"
    tiny_config().save_pretrained(model_only)
    with pytest.raises(ValueError, match="no processor_config.json"):
        report.run_evaluation(model_only, num_scenes=2)
    with pytest.raises(ValueError, match="unknown target"):
        report.run_evaluation(checkpoint, num_scenes=2, targets=["depth", "edges"])
    with pytest.raises(ValueError, match="num-scenes"):
        report.run_evaluation(checkpoint, num_scenes=0)
    with pytest.raises(ValueError, match="TARGET=DIR"):
        report.parse_specialists(["depth"])
    with pytest.raises(ValueError, match="NAME=DIR"):
        report.parse_comparisons(["runs/fourm"])
    with pytest.raises(ValueError, match="row name 'trivial baseline' is taken"):
        report.parse_comparisons([f"trivial baseline={checkpoint}"])
    with pytest.raises(ValueError, match=r"--compare old=.*no config.json"):
        report.run_evaluation(checkpoint, num_scenes=2, caption_prompts=0, comparisons={"old": str(tmp_path)})
    with pytest.raises(ValueError, match=r"specialist semseg=.*does not generate \['semseg'\]"):
        report.run_evaluation(checkpoint, num_scenes=2, targets=["depth"], caption_prompts=0,
                              specialists={"semseg": str(_depth_only(tmp_path, checkpoint))})


def _depth_only(tmp_path, checkpoint):
    """A copy of the checkpoint's folder whose config outputs tok_depth only."""
    import shutil

    from fourm_hf.configuration_fourm import FourMConfig

    folder = tmp_path / "depth-only"
    if not folder.exists():
        shutil.copytree(checkpoint, folder)
        config = FourMConfig.from_pretrained(str(checkpoint))
        config.output_modalities = ["tok_depth"]
        config.save_pretrained(folder)
    return folder


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    from fourm_hf.cli import main

    code = main(["evaluate", "--checkpoint", str(tmp_path / "missing"), "--num-scenes", "2"])
    assert code == 2
    assert "not a directory" in capsys.readouterr().err


# ---- the pipeline contract, with a stand-in pipeline ------------------------------------------------------
class StandInPipeline:
    """Answers like pipeline("any-to-any"): a list of dicts for images, one dict for a text prompt."""

    def __init__(self, recaption="a large red cube next to a green cone."):
        self.recaption = recaption
        self.calls = []

    def __call__(self, images=None, text=None, target_modalities=(), seed=0, batch_size=1, **kwargs):
        self.calls.append({"targets": list(target_modalities), "seed": seed, "batch_size": batch_size, "text": text,
                           "num_images": None if images is None else len(images), **kwargs})
        if text is not None:
            return {"rgb": {"image": None, "array": np.zeros((SIZE, SIZE, 3), np.uint8)}}
        (target,) = target_modalities
        outputs = []
        for image in images:
            size = image.size[0]
            answers = {
                "depth": {"image": image, "array": np.full((size, size), 2.0, np.float64)},
                "normal": {"image": image, "array": np.tile(np.float32([0, 0, -1]), (size, size, 1))},
                "semseg": {"image": image, "array": np.ones((size, size), np.int32)},
                "det": {"boxes": [{"label": "red cube", "score": None, "box": [0.1, 0.1, 0.5, 0.5]}], "image": image},
                "caption": self.recaption,
            }
            outputs.append({target: answers[target]})
        return outputs


def test_pipeline_predictor_reads_the_pipeline_outputs(scenes):
    from fourm_hf.evaluation.predictors import PipelinePredictor

    pipe = StandInPipeline()
    predictor = PipelinePredictor(pipe, ["depth", "semseg", "det", "caption"], seed=3, batch_size=2,
                                  generate_kwargs={"num_steps": 4})
    depth = predictor.predict(scenes[:3], "depth")
    assert pipe.calls[-1] == {"targets": ["depth"], "seed": 3, "batch_size": 2, "text": None, "num_images": 3,
                              "num_steps": 4}
    assert len(depth) == 3 and depth[0].dtype == np.float32 and depth[0].shape == (SIZE, SIZE) and depth[0][0, 0] == 2.0
    semseg = predictor.predict(scenes[:1], "semseg")[0]
    assert semseg.dtype == np.int64 and (semseg == 1).all()
    assert predictor.predict(scenes[:1], "det")[0] == [{"label": "red cube", "box": [0.1, 0.1, 0.5, 0.5], "score": 1.0}]
    assert predictor.predict(scenes[:1], "caption") == [pipe.recaption]
    with pytest.raises(ValueError, match="cannot predict target 'normal'"):
        predictor.predict(scenes[:1], "normal")


def test_caption_to_rgb_counts_prompts_whose_objects_come_back():
    from fourm_hf.evaluation.caption_to_rgb import caption_to_rgb_check

    pipe = StandInPipeline(recaption="a large red cube. a small green cone behind the red cube.")
    prompts = ["a large red cube.", "a small blue sphere. a large green cone to the left of the blue sphere."]
    result = caption_to_rgb_check(pipe, prompts, seed=7, batch_size=4)
    assert result["num_prompts"] == 2
    assert result["all_objects_found"] == 0.5  # the blue sphere of prompt 2 is missing
    assert result["object_recall"] == pytest.approx(2 / 3)
    assert [call["seed"] for call in pipe.calls[:2]] == [7, 8] and pipe.calls[2]["targets"] == ["caption"]
    assert result["examples"][1] == {"prompt": prompts[1], "recaption": pipe.recaption, "found": 1, "wanted": 2}


def test_evaluate_command_writes_the_table_and_json(tmp_path, checkpoint, scenes, monkeypatch, capsys):
    import shutil

    from fourm_hf.cli import main
    from fourm_hf.evaluation import predictors

    built = []
    monkeypatch.setattr(predictors, "pipeline",
                        lambda task, model, **kwargs: built.append((task, model, kwargs)) or StandInPipeline())
    model_only = tmp_path / "specialist"  # a `fourm-hf train` output: the model without its processor
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, model_only / name)
    out, markdown = tmp_path / "eval.json", tmp_path / "table.md"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--num-scenes", str(NUM_SCENES), "--batch-size", "3",
                 "--train-stats-scenes", "3", "--caption-prompts", "2", "--specialist", f"depth={model_only}",
                 "--compare", f"4M (earlier)={model_only}",
                 "--processor", str(checkpoint), "--out", str(out), "--markdown", str(markdown)])
    assert code == 0, capsys.readouterr().err
    assert built == [("any-to-any", str(checkpoint), {}), ("any-to-any", str(model_only), {"processor": str(checkpoint)}),
                     ("any-to-any", str(model_only), {"processor": str(checkpoint)})]
    result = json.loads(out.read_text())
    assert [row["name"] for row in result["rows"]] == ["4M", "4M (earlier)", "tokenizer ceiling", "trivial baseline",
                                                       "specialist (depth)"]
    assert result["rows"][1]["scores"] == result["rows"][0]["scores"]  # the same stand-in pipeline
    assert result["heldout_dataset_seed"] == HELDOUT_DATASET_SEED and result["image_size"] == SIZE
    four_m = result["rows"][0]["scores"]
    assert sorted(four_m) == sorted(ALL_COLUMNS)
    truth = np.concatenate([s["depth"].ravel() for s in scenes]).astype(np.float64)
    assert four_m["depth_abs_rel"] == pytest.approx(np.mean(np.abs(2.0 - truth) / truth), rel=1e-5)
    assert result["rows"][4]["scores"] == {k: v for k, v in four_m.items() if k.startswith("depth_")}
    assert result["caption_to_rgb"]["num_prompts"] == 2
    table = markdown.read_text()
    assert table == result["markdown"] and table in capsys.readouterr().out
    assert "| specialist (depth) |" in table and "| 4M (earlier) |" in table and "Caption -> RGB (2 held-out captions" in table
    assert f"Command: `fourm-hf evaluate --checkpoint {checkpoint} --processor {checkpoint} --num-scenes 4 --batch-size 3 " \
           "--targets depth normal" in table and "--compare '4M (earlier)=" in table
    with pytest.raises(ValueError, match="--processor .*not a saved FourMProcessor"):
        report.check_checkpoint(model_only, ["depth"], processor=model_only)

    # a specialist that was not retrained: its row carried from this run's JSON into the next table
    again = tmp_path / "eval-again.json"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--num-scenes", str(NUM_SCENES), "--batch-size", "3",
                 "--train-stats-scenes", "3", "--caption-prompts", "0", "--processor", str(checkpoint),
                 "--carry-row", f"{out}=specialist (depth)", "--out", str(again)])
    assert code == 0, capsys.readouterr().err
    rows = json.loads(again.read_text())["rows"]
    assert rows[-1]["name"] == f"specialist (depth) (carried from eval.json, {result['date'][:10]})"
    assert rows[-1]["scores"] == result["rows"][4]["scores"]
    assert "--carry-row" in json.loads(again.read_text())["command"]
    assert "scored by an earlier run on the same held-out scenes" in json.loads(again.read_text())["markdown"]


def test_carried_rows_must_come_from_the_same_held_out_scenes(tmp_path):
    earlier = {"num_scenes": 200, "image_size": 64, "heldout_dataset_seed": HELDOUT_DATASET_SEED, "seed": 0,
               "date": "2026-12-01T19:23:16+00:00", "rows": [{"name": "specialist (depth)", "scores": {"depth_rmse": 1.0}}]}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(earlier))
    held_out = {key: earlier[key] for key in ("num_scenes", "image_size", "heldout_dataset_seed", "seed")}
    (row,) = report.carried_rows([(str(path), "specialist (depth)")], held_out)
    assert row == {"name": "specialist (depth) (carried from eval.json, 2026-12-01)", "scores": {"depth_rmse": 1.0}}
    with pytest.raises(ValueError, match="other held-out scenes .*num_scenes 200 there, 64 here"):
        report.carried_rows([(str(path), "specialist (depth)")], dict(held_out, num_scenes=64))
    with pytest.raises(ValueError, match=r"no row named 'specialist \(semseg\)'; its rows are \['specialist \(depth\)'\]"):
        report.carried_rows([(str(path), "specialist (semseg)")], held_out)
    with pytest.raises(ValueError, match="cannot read an evaluation JSON"):
        report.carried_rows([(str(tmp_path / "missing.json"), "x")], held_out)
    with pytest.raises(ValueError, match="FILE=ROW NAME"):
        report.parse_carried_rows(["eval.json"])


def test_pipeline_predictor_with_the_real_pipeline(checkpoint, scenes):
    pytest.importorskip("fourm_hf.pipelines.any_to_any", reason="the any-to-any pipeline is not in this checkout")
    from PIL import Image

    from fourm_hf.evaluation.predictors import PipelinePredictor

    predictor = PipelinePredictor(checkpoint, ["depth", "det"], seed=1, batch_size=2)
    depth = predictor.predict(scenes[:2], "depth")
    direct = predictor.pipe([Image.fromarray(s["rgb"]) for s in scenes[:2]], target_modalities=["depth"], seed=1, batch_size=2)
    for predicted, output in zip(depth, direct):
        assert predicted.shape == (SIZE, SIZE) and predicted.dtype == np.float32
        np.testing.assert_array_equal(predicted, output["depth"]["array"])
    boxes = predictor.predict(scenes[:2], "det")
    assert all(isinstance(b["score"], float) for sample in boxes for b in sample)
    scores = score_predictions({"depth": depth, "det": boxes}, scenes[:2])
    assert 0.0 <= scores["depth_delta1"] <= 1.0 and 0.0 <= scores["det_map50"] <= 1.0


def test_caption_prompts_are_the_first_captions_that_fit_the_model(tmp_path, checkpoint, processor, scenes):
    import shutil

    from fourm_hf.configuration_fourm import FourMConfig

    lengths = [len(processor.tokenizer.encode_for_model(s["caption"], "caption")) for s in scenes]
    folder = tmp_path / "short-captions"
    shutil.copytree(checkpoint, folder)
    config = FourMConfig.from_pretrained(str(checkpoint))
    config.modality_specs["caption"]["max_length"] = min(lengths)
    config.save_pretrained(folder)
    prompts, too_long = report.caption_prompts_that_fit(scenes, 1, folder, processor)
    first_fit = lengths.index(min(lengths))
    assert prompts == [scenes[first_fit]["caption"]] and too_long == first_fit
    config.modality_specs["caption"]["max_length"] = min(lengths) - 1
    config.save_pretrained(folder)
    with pytest.raises(ValueError, match="no held-out caption fits"):
        report.caption_prompts_that_fit(scenes, 1, folder, processor)


def test_dtype_and_int8_reach_the_pipeline_model(checkpoint, scenes, tmp_path, capsys):
    pytest.importorskip("fourm_hf.pipelines.any_to_any", reason="the any-to-any pipeline is not in this checkout")
    import torch

    from fourm_hf.cli import main
    from fourm_hf.evaluation.predictors import PipelinePredictor
    from fourm_hf.modeling.quantization import quantized_parts

    half = PipelinePredictor(checkpoint, ["depth"], seed=1, batch_size=2, dtype="bfloat16")
    assert {p.dtype for p in half.pipe.model.parameters()} == {torch.bfloat16}
    assert half.predict(scenes[:2], "depth")[0].shape == (SIZE, SIZE)
    quantized = PipelinePredictor(checkpoint, ["det"], seed=1, batch_size=2, int8=True)
    assert quantized_parts(quantized.pipe.model) == ["encoder", "decoder", "heads"]
    assert isinstance(quantized.predict(scenes[:1], "det")[0], list)
    with pytest.raises(ValueError, match="--dtype must be one of"):
        PipelinePredictor(checkpoint, ["depth"], dtype="float16")
    with pytest.raises(ValueError, match="--int8 quantises float32 weights"):
        report.run_evaluation(checkpoint, num_scenes=1, targets=["depth"], dtype="bfloat16", int8=True)
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--num-scenes", "2", "--batch-size", "2", "--targets", "depth",
                 "--train-stats-scenes", "2", "--caption-prompts", "0", "--dtype", "bfloat16", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["dtype"] == "bfloat16" and not result["int8"]
    assert "models in bfloat16" in result["markdown"] and "--dtype bfloat16" in result["command"]
    with pytest.raises(SystemExit) as error:
        main(["evaluate", "--checkpoint", str(checkpoint), "--dtype", "float16"])
    assert error.value.code == 2
