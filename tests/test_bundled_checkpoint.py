"""The checkpoint bundled in the package (src/fourm_hf/checkpoints/fourm-scenes64): it loads through
the Auto classes and the any-to-any pipeline, and it really predicts: RGB -> depth and segmentation on
held-out scenes beat the trivial baseline by a clear margin. Also ``fourm-hf demo`` and
``fourm-hf assemble-checkpoint``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

import fourm_hf
from fourm_hf.checkpoints import BUNDLED_CHECKPOINT, bundled_checkpoint
from fourm_hf.hub import assemble_checkpoint
from fourm_hf.app.demo import run_demo
from fourm_hf.hub import add_remote_code
from fourm_hf.evaluation.heldout import TRAIN_STATS_DATASET_SEED, heldout_scenes, render_scene_set
from fourm_hf.evaluation.predictors import PipelinePredictor, TrainStatistics, TrivialBaseline
from fourm_hf.evaluation.scoring import evaluate_predictor

NUM_SCENES = 8


@pytest.fixture(scope="module")
def pipe():
    return pipeline("any-to-any", model=bundled_checkpoint())


@pytest.fixture(scope="module")
def scenes(pipe):
    return heldout_scenes(NUM_SCENES, pipe.processor.image_size)


def test_bundled_checkpoint_is_small_and_complete():
    files = [path for path in BUNDLED_CHECKPOINT.rglob("*") if path.is_file()]
    names = {path.relative_to(BUNDLED_CHECKPOINT).as_posix() for path in files}
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md",
                 "vqvae/tok_depth/model.safetensors", "vqvae/tok_semseg/model.safetensors"):
        assert name in names, f"{name} missing from the bundled checkpoint"
    assert sum(path.stat().st_size for path in files) < 32 * 2**20
    card = (BUNDLED_CHECKPOINT / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: any-to-any" in card and "tokenizer ceiling" in card and "trivial baseline" in card
    # No custom_pipelines entry (push_checkpoint adds it to the uploaded copy): with one, pipeline() would
    # demand trust_remote_code even with fourm_hf installed.
    config = json.loads((BUNDLED_CHECKPOINT / "config.json").read_text())
    assert "custom_pipelines" not in config and "AutoModel" in config["auto_map"]


def test_auto_classes_load_the_bundled_checkpoint():
    model = AutoModel.from_pretrained(bundled_checkpoint())
    processor = AutoProcessor.from_pretrained(bundled_checkpoint())
    assert isinstance(model, fourm_hf.FourMModel) and isinstance(processor, fourm_hf.FourMProcessor)
    assert set(processor.vqvaes) >= {"tok_rgb", "tok_depth", "tok_normal", "tok_semseg"}
    for name in ("tok_depth", "tok_semseg"):
        assert model.config.modality(name).vocab_size == processor.vqvaes[name].config.vocab_size


def test_rgb_to_depth_and_semseg_beat_the_trivial_baseline(pipe, scenes):
    statistics = TrainStatistics.from_scenes(render_scene_set(64, pipe.processor.image_size, TRAIN_STATS_DATASET_SEED))
    model = evaluate_predictor(PipelinePredictor(pipe, ["depth", "semseg"], batch_size=NUM_SCENES), scenes)["scores"]
    trivial = evaluate_predictor(TrivialBaseline(statistics, ["depth", "semseg"]), scenes)["scores"]
    # Margins well inside what the checkpoint reaches (benchmarks/RESULTS.md), far outside a baseline's reach.
    assert model["depth_delta1"] >= trivial["depth_delta1"] + 0.2, (model, trivial)
    assert model["depth_abs_rel"] <= 0.5 * trivial["depth_abs_rel"], (model, trivial)
    assert model["semseg_miou"] >= trivial["semseg_miou"] + 0.2, (model, trivial)


def test_rgb_to_caption_names_the_objects(pipe):
    """On 16 scenes: the object F1 of 8 scenes moves by +-0.1 between checkpoints of the same 200-scene F1."""
    from fourm_hf.data.scenes import COLORS, SHAPES
    from fourm_hf.training.metrics import CaptionObjectF1

    scenes = heldout_scenes(2 * NUM_SCENES, pipe.processor.image_size)
    outputs = pipe([Image.fromarray(scene["rgb"]) for scene in scenes], target_modalities=["caption"], seed=0,
                   batch_size=2 * NUM_SCENES)
    metric = CaptionObjectF1(colours=list(COLORS), shapes=list(SHAPES), keep_in_memory=True)
    result = metric.compute(predictions=[out["caption"] for out in outputs], references=[s["caption"] for s in scenes])
    assert result["f1"] >= 0.5, [out["caption"] for out in outputs]


def test_generated_boxes_carry_real_confidences(pipe, scenes):
    outputs = pipe([Image.fromarray(scene["rgb"]) for scene in scenes[:4]], target_modalities=["det"], seed=0,
                   batch_size=4)
    scores = [box["score"] for out in outputs for box in out["det"]["boxes"]]
    assert len(scores) >= 4, outputs  # the scenes hold several objects each
    assert all(isinstance(score, float) and 0.0 < score <= 1.0 for score in scores), scores
    assert min(scores) < 1.0 and len(set(scores)) > 1, scores  # a confidence per box, not a constant


def test_demo_writes_grids_and_a_scored_report(tmp_path):
    pytest.importorskip("skimage", reason="the demo's photographs come with scikit-image (pip install -e .[demo])")
    report = run_demo(out=tmp_path, num_scenes=1, photos=["chelsea"], prompts=1, progress=False)
    for name in ("scene_00.png", "photo_chelsea.png", "prompt_00.png", "report.md", "report.json"):
        assert (tmp_path / name).is_file(), name
    with Image.open(tmp_path / "scene_00.png") as grid:
        assert grid.width > grid.height > 128  # the input and every generated modality side by side
    scores = report["scenes"][0]["scores"]
    assert 0.0 <= scores["depth_delta1"] <= 1.0 and 0.0 <= scores["semseg_miou"] <= 1.0
    assert isinstance(report["photos"][0]["caption"], str) and report["photos"][0]["caption"]
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "depth δ<1.25" in markdown and "scene_00.png" in markdown and "chelsea" in markdown
    assert json.loads((tmp_path / "report.json").read_text())["mean_scores"] == report["mean_scores"]


@pytest.mark.parametrize("options, message", [
    ({"photos": ["lena"]}, "unknown photo"),
    ({"num_scenes": 1, "prompts": 2}, "exceeds --num-scenes"),
    ({"num_scenes": 0, "photos": [], "prompts": 0}, "nothing to do"),
    ({"num_scenes": -1}, "--num-scenes must be"),
])
def test_demo_rejects_bad_options(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        run_demo(out=tmp_path, **{"num_scenes": 1, "photos": [], "prompts": 0, **options})


def test_demo_command_reports_a_missing_or_wrong_checkpoint(tmp_path, capsys):
    from fourm_hf.cli import main

    assert main(["demo", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["demo", "--checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "empty: no config.json" in capsys.readouterr().err


def test_assemble_checkpoint_round_trips_and_replaces_atomically(tmp_path):
    model = AutoModel.from_pretrained(bundled_checkpoint())
    processor = AutoProcessor.from_pretrained(bundled_checkpoint())
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "processor")
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"markdown": "| model | depth δ<1.25 ↑ |\n|---|---:|\n| 4M | 0.950 |\n"}))
    out = tmp_path / "bundle"
    (out / "stale").mkdir(parents=True)
    assemble_checkpoint(tmp_path / "model", tmp_path / "processor", out, evaluation=evaluation, training_data="scenes")
    assert not (out / "stale").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| 4M | 0.950 |" in card and "scenes" in card
    reloaded = pipeline("any-to-any", model=str(out))
    image = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    first = reloaded(image, target_modalities=["depth"], greedy=True, return_tokens=True)["tokens"]["tok_depth"]
    again = pipeline("any-to-any", model=bundled_checkpoint())(image, target_modalities=["depth"], greedy=True,
                                                               return_tokens=True)["tokens"]["tok_depth"]
    assert np.array_equal(first, again)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 AutoModel.from_pretrained(str(out)).state_dict().values()))
    assert (out / "modeling_fourm.py").is_file() and (out / "processing_fourm.py").is_file()
    # --no-remote-code (the bundled checkpoint): the same files less the code
    bare = assemble_checkpoint(tmp_path / "model", tmp_path / "processor", tmp_path / "bare", evaluation=evaluation,
                               training_data="scenes", remote_code=False)
    assert not list(bare.glob("*.py"))
    assert {p.relative_to(bare) for p in bare.rglob("*")} == {p.relative_to(out) for p in out.rglob("*") if p.suffix != ".py"}


def test_assemble_checkpoint_rejects_folders_that_are_not_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="--model .*no config.json"):
        assemble_checkpoint(tmp_path, tmp_path, tmp_path / "out")
    model = AutoModel.from_pretrained(bundled_checkpoint())
    model.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="--processor .*no processor_config.json"):
        assemble_checkpoint(tmp_path / "model", tmp_path / "model", tmp_path / "out")
    processor = AutoProcessor.from_pretrained(bundled_checkpoint())
    processor.save_pretrained(tmp_path / "processor")
    with pytest.raises(ValueError, match="--evaluation .*not a file"):
        assemble_checkpoint(tmp_path / "model", tmp_path / "processor", tmp_path / "out", evaluation=tmp_path / "x.json")


def test_the_committed_recipe_describes_the_bundled_checkpoint():
    from conftest import REPO_ROOT
    from fourm_hf.training.pretrain import load_settings

    recipe = REPO_ROOT / "examples" / "scenes64" / "fourm_scenes64.yaml"
    if not recipe.is_file():
        pytest.skip(f"{recipe} is not part of an installed package (source checkout only)")
    settings = load_settings(recipe)
    config = fourm_hf.FourMConfig.from_pretrained(bundled_checkpoint())
    for key in ("hidden_size", "num_encoder_layers", "num_decoder_layers", "num_attention_heads", "image_size", "patch_size"):
        assert getattr(config, key) == settings["model"][key], key
    assert list(config.input_modalities) == settings["model"]["input_modalities"]
    assert list(config.output_modalities) == settings["model"]["output_modalities"]
    for name, length in settings["model"]["max_lengths"].items():
        assert config.modality(name).max_length == length


def test_the_recipe_stages_chain_and_reproduce_sh_assembles_the_last_one():
    """Each stage starts from the previous stage's output, and reproduce.sh runs them all and bundles the last."""
    from conftest import REPO_ROOT
    from fourm_hf.training.pretrain import load_settings

    folder = REPO_ROOT / "examples" / "scenes64"
    if not (folder / "reproduce.sh").is_file():
        pytest.skip(f"{folder} is not part of an installed package (source checkout only)")
    stages = [folder / "fourm_scenes64.yaml"] + sorted(folder.glob("fourm_scenes64_stage*.yaml"))
    assert len(stages) >= 3
    settings = [load_settings(stage) for stage in stages]
    for previous, stage in zip(settings, settings[1:]):
        assert stage["model"]["pretrained"] == previous["training"]["output_dir"]
    script = (folder / "reproduce.sh").read_text()
    for stage in stages:
        assert f"train examples/scenes64/{stage.name} " in script, stage.name
    last_output = settings[-1]["training"]["output_dir"].replace("runs/scenes64", "$RUN")
    assert f'assemble-checkpoint --model "{last_output}"' in script
    assert f'evaluate --checkpoint "{last_output}"' in script


def test_the_bundled_checkpoint_carries_no_code_and_a_saved_copy_does(tmp_path):
    """The bundled folder ships inside the package: no flat code in it. A folder saved from it gets the
    code (as every saved folder does), and so does a copy prepared for the Hub; both then load with
    trust_remote_code=True in a process where fourm_hf cannot be imported."""
    assert not sorted(BUNDLED_CHECKPOINT.glob("*.py")), "the bundled checkpoint should carry no code"
    saved, pushed = tmp_path / "saved", tmp_path / "pushed"
    AutoModel.from_pretrained(bundled_checkpoint()).save_pretrained(saved)
    AutoProcessor.from_pretrained(bundled_checkpoint()).save_pretrained(saved)
    shutil.copytree(BUNDLED_CHECKPOINT, pushed)
    written = add_remote_code(pushed)
    assert {"modeling_fourm.py", "configuration_fourm.py", "processing_fourm.py", "vqvae.py"} <= set(written)
    assert add_remote_code(pushed) == []  # nothing left to add
    for folder in (saved, pushed):
        assert {path.name for path in saved.glob("*.py")} <= {path.name for path in folder.glob("*.py")}
        code = (
            "import sys; sys.modules['fourm_hf'] = None  # make the package unimportable\n"
            "from transformers import AutoModel, AutoProcessor\n"
            f"m = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
            f"p = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
            "assert 'transformers_modules' in type(m).__module__ and 'transformers_modules' in type(p).__module__\n"
            "print(sum(x.numel() for x in m.parameters()), sorted(p.vqvaes))\n"
        )
        environment = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
        result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        count, vqvaes = result.stdout.strip().splitlines()[-1].split(" ", 1)
        assert int(count) == sum(x.numel() for x in AutoModel.from_pretrained(bundled_checkpoint()).parameters())
        assert "tok_depth" in vqvaes
