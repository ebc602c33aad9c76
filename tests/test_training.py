"""Trainer-based 4M pretraining: the loss falls, per-modality metrics, exact resume, the CLI, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import TrainerCallback, TrainingArguments

from fourm_hf import FourMModel
from fourm_hf.cli import main as cli_main
from fourm_hf.testing_utils import tiny_config
from fourm_hf.training.pretrain import (
    RepeatedSampleDataset,
    build_collator,
    build_model_config,
    build_trainer,
    load_settings,
    prepare_dataset,
    random_corpus,
    validate_settings,
)
from fourm_hf.training.trainer import FourMTrainer, target_token_counts

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO_ROOT / "examples" / "configs" / "tiny_scenes.yaml"

torch.set_num_threads(1)

# The model section that describes tiny_config() (64 wide, 2+2 layers, 32 px, 4x4 grid).
TINY_MODEL = dict(
    hidden_size=64, num_encoder_layers=2, num_decoder_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    vocab_sizes=dict(tok_rgb=64, tok_depth=32, tok_normal=32, tok_semseg=16, tok_clip=32, caption=96, det=96),
    max_lengths=dict(caption=24, det=24),
)
QUIET = dict(report_to=[], disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False)


def tiny_settings(output_dir, masking=None, data=None, **training) -> dict:
    return {
        "model": dict(TINY_MODEL),
        "masking": {"strategy": "4m7", "input_budget": 24, "target_budget": 24, "seed": 0, "num_sentinels": 20, **(masking or {})},
        "data": dict(data or {}),
        "training": {"output_dir": str(output_dir), "save_strategy": "no", "seed": 0, **QUIET, **training},
    }


@pytest.fixture(scope="module")
def config():
    return build_model_config(TINY_MODEL, {"input_budget": 24, "target_budget": 24})


@pytest.fixture(scope="module")
def corpus(config):
    return random_corpus(config, 32, seed=0)


@pytest.fixture(scope="module")
def eval_corpus(config):
    return random_corpus(config, 12, seed=1)


def test_model_section_reproduces_tiny_config(config):
    reference = tiny_config()
    assert config.modality_specs == reference.modality_specs
    assert (config.hidden_size, config.grid_size, config.input_budget) == (reference.hidden_size, reference.grid_size, 24)


def test_vocab_sizes_from_tokenizer_folders(tmp_path):
    from fourm_hf.text.tokenization_fourm import train_text_tokenizer
    from fourm_hf.tokenizers.vqvae import FourMVQVAEConfig

    text = train_text_tokenizer(["a red cube left of a blue sphere"] * 4, vocab_size=40, num_sentinels=8, coord_bins=16)
    text.save_pretrained(tmp_path / "text")
    FourMVQVAEConfig(input_kind="depth", image_size=32, patch_size=8, vocab_size=256).save_pretrained(tmp_path / "depth")
    model = {**TINY_MODEL, "vocab_sizes": {"tok_rgb": 64}, "max_lengths": {"caption": 24}, "text_tokenizer": str(tmp_path / "text"),
             "vqvae": {"tok_depth": str(tmp_path / "depth")}, "input_modalities": ["tok_rgb", "tok_depth", "caption"],
             "output_modalities": ["tok_depth", "caption"]}
    config = build_model_config(model)
    assert config.modality("caption").vocab_size == len(text) and config.modality("tok_depth").vocab_size == 256
    assert config.modality("caption").max_length == 24 and config.modality("tok_rgb").vocab_size == 64
    collator = build_collator(config, {"strategy": "uniform", "input_budget": 24, "target_budget": 24}, text_tokenizer=text)
    assert collator.num_sentinels == 8
    with pytest.raises(ValueError, match="model.text_tokenizer"):
        build_model_config({**model, "text_tokenizer": str(tmp_path / "missing")})


# ---- training and evaluation -------------------------------------------------------------------------
def test_loss_falls_and_metrics_are_per_modality(tmp_path, corpus, eval_corpus, config):
    settings = tiny_settings(tmp_path / "run", max_steps=40, per_device_train_batch_size=8, per_device_eval_batch_size=6,
                             learning_rate=3e-3, warmup_steps=2, logging_steps=10)
    trainer = build_trainer(settings, train_dataset=corpus, eval_dataset=eval_corpus)
    assert isinstance(trainer, FourMTrainer)
    assert trainer.args.optim == "adamw_torch_fused" and trainer.args.lr_scheduler_type == "cosine"
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()

    names = config.output_modalities
    for metrics in (before, after):
        assert {f"eval_loss_{name}" for name in names} <= set(metrics)
        assert metrics["eval_target_tokens"] == 12 * 24  # every sample fills its target budget here
    assert after["eval_loss"] < before["eval_loss"] - 1.0, (before["eval_loss"], after["eval_loss"])
    # eval_loss is the mean over output modalities of the token-weighted per-modality losses
    assert after["eval_loss"] == pytest.approx(np.mean([after[f"eval_loss_{n}"] for n in names]), rel=1e-6)
    assert before["eval_loss"] == pytest.approx(np.log(np.mean([config.modality(n).vocab_size for n in names])), abs=0.6)

    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry and "eval_loss" not in entry]
    assert len(train_logs) == 4
    assert all(f"loss_{name}" in entry for entry in train_logs for name in names)
    assert train_logs[-1]["loss"] < train_logs[0]["loss"]


def test_eval_losses_equal_a_direct_computation(config, eval_corpus, tmp_path):
    trainer = build_trainer(tiny_settings(tmp_path / "run", per_device_eval_batch_size=5), train_dataset=eval_corpus,
                            eval_dataset=eval_corpus)
    metrics = trainer.evaluate()
    model = trainer.model.eval()
    sums, counts = {}, {}
    dataset = trainer.eval_dataset
    for start in range(0, len(dataset), 5):  # same batches, same (epoch-0) masks
        batch = trainer.eval_data_collator([dataset[i] for i in range(start, min(start + 5, len(dataset)))])
        with torch.no_grad():
            output = model(**batch)
        batch_counts = target_token_counts(batch, torch.tensor([config.modality_id(n) for n in config.output_modalities]))
        for i, name in enumerate(config.output_modalities):
            sums[name] = sums.get(name, 0.0) + float(output.modality_losses[name]) * int(batch_counts[i])
            counts[name] = counts.get(name, 0) + int(batch_counts[i])
    for name in config.output_modalities:
        if counts[name]:
            assert metrics[f"eval_loss_{name}"] == pytest.approx(sums[name] / counts[name], rel=1e-5)
    # evaluating twice gives the same numbers (eval masks do not follow the training epoch)
    trainer.data_collator.set_epoch(3)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-9)


def test_repeat_sampling_gives_each_copy_its_own_masks(config, corpus):
    collator = build_collator(config, {"strategy": "all2all", "seed": 0, "num_sentinels": 20})
    dataset = prepare_dataset(corpus, config, collator, "train", repeats=3)
    assert isinstance(dataset, RepeatedSampleDataset) and len(dataset) == 3 * len(corpus)
    first, copy = dataset[5], dataset[5 + len(corpus)]
    assert np.array_equal(first["tok_rgb"], copy["tok_rgb"]) and first["sample_index"] != copy["sample_index"]
    masks = collator([first, copy])
    assert not torch.equal(masks["input_positions"][0], masks["input_positions"][1])
    with pytest.raises(ValueError, match="repeat_sampling"):
        RepeatedSampleDataset(corpus, 0)


# ---- exact resume --------------------------------------------------------------------------------------
class SimulatedKill(Exception):
    pass


class KillAtStep(TrainerCallback):
    """Raises at the start of the step after ``step`` (its checkpoint is on disk by then)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedKill(f"killed after step {self.step}")


def test_resume_is_exact(tmp_path, config, corpus):
    init_dir = tmp_path / "init"
    FourMModel(config).save_pretrained(init_dir)
    train = corpus.select(range(16))  # 4 steps per epoch: the run crosses two epoch boundaries

    def settings(out):
        result = tiny_settings(out, max_steps=10, per_device_train_batch_size=4, learning_rate=2e-3, warmup_steps=3,
                               save_strategy="steps", save_steps=3, logging_steps=1, data_seed=7)
        result["model"] = {"pretrained": str(init_dir)}
        return result

    uninterrupted = build_trainer(settings(tmp_path / "a"), train_dataset=train)
    uninterrupted.train()

    interrupted = build_trainer(settings(tmp_path / "b"), train_dataset=train)
    interrupted.add_callback(KillAtStep(6))
    with pytest.raises(SimulatedKill):
        interrupted.train()
    assert (tmp_path / "b" / "checkpoint-6" / "model.safetensors").is_file()
    assert not (tmp_path / "b" / "checkpoint-9").exists()

    resumed = build_trainer(settings(tmp_path / "b"), train_dataset=train)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 10
    expected = dict(uninterrupted.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name
    losses = lambda trainer: [e["loss"] for e in trainer.state.log_history if "loss" in e and e["step"] > 6]  # noqa: E731
    assert losses(resumed) == losses(uninterrupted)


# ---- CLI -----------------------------------------------------------------------------------------------
def test_cli_trains_the_example_config(tmp_path):
    settings = load_settings(EXAMPLE_CONFIG)
    example_config = build_model_config(settings["model"], settings["masking"])
    random_corpus(example_config, 8, seed=0).save_to_disk(str(tmp_path / "train"))
    random_corpus(example_config, 4, seed=1).save_to_disk(str(tmp_path / "eval"))
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "fourm_hf.cli", "train", "--config", str(EXAMPLE_CONFIG), "--output-dir", str(out),
        f"data.train={tmp_path / 'train'}", f"data.eval={tmp_path / 'eval'}", "training.max_steps=2",
        "training.per_device_train_batch_size=4", "training.per_device_eval_batch_size=4", "training.eval_steps=2",
        "training.save_steps=2", "training.logging_steps=1", "training.dataloader_num_workers=0",
        "training.disable_tqdm=true", "training.dataloader_pin_memory=false",
    ]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((out / "all_results.json").read_text())
    for name in example_config.output_modalities:
        assert np.isfinite(results[f"eval_loss_{name}"])
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()
    saved = yaml.safe_load((out / "fourm_pretrain.yaml").read_text())
    assert saved["training"]["output_dir"] == str(out) and saved["data"]["train"] == str(tmp_path / "train")
    model = FourMModel.from_pretrained(out)
    assert model.config.modality("tok_semseg").vocab_size == settings["model"]["vocab_sizes"]["tok_semseg"]
    assert model.config.input_budget == 64


def test_two_fresh_init_runs_with_the_same_seed_are_identical(tmp_path, corpus):
    """``fourm-hf train`` seeds before it builds the model, so a fresh init does not depend on the global RNG."""
    from safetensors.torch import load_file

    corpus.select(range(8)).save_to_disk(str(tmp_path / "train"))

    def run(name: str, seed: int) -> dict:
        settings = tiny_settings(tmp_path / name, data={"train": str(tmp_path / "train")}, max_steps=3,
                                 per_device_train_batch_size=4, learning_rate=2e-3, seed=seed)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings))
        torch.rand(int(torch.randint(1, 100, (1,))))  # move the global RNG between runs
        assert cli_main(["train", "--config", str(path)]) == 0
        return load_file(str(tmp_path / name / "model.safetensors"))

    first, second, other_seed = run("a", 5), run("b", 5), run("c", 6)
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    assert any(not torch.equal(tensor, other_seed[name]) for name, tensor in first.items())


def test_cli_reports_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"hiden_size": 64}}))
    assert cli_main(["train", "--config", str(bad)]) == 2
    assert "model.hiden_size" in capsys.readouterr().err
    assert cli_main(["train", "--config", str(EXAMPLE_CONFIG), "training.max_step=3"]) == 2
    assert "training.max_step" in capsys.readouterr().err
    # an override right after --resume-from-checkpoint is still an override (here a misspelt one)
    assert cli_main(["train", "--config", str(EXAMPLE_CONFIG), "--resume-from-checkpoint", "training.max_step=3"]) == 2
    assert "training.max_step" in capsys.readouterr().err
    assert cli_main(["train", "--config", str(EXAMPLE_CONFIG), "--resume-from-checkpoint", str(tmp_path / "nope")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


# ---- bad input -----------------------------------------------------------------------------------------
def test_unknown_config_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        validate_settings({"optimizer": {"lr": 1}})
    with pytest.raises(ValueError, match="training.learning_rat"):
        validate_settings({"training": {"learning_rat": 1e-3}})
    with pytest.raises(ValueError, match="data.repeat"):
        validate_settings({"data": {"repeat": 2}})
    with pytest.raises(ValueError, match="masking.strategy\\[0\\]"):
        build_trainer({**tiny_settings(tmp_path), "masking": {"strategy": [{"input_alpha": {}}], "num_sentinels": 20}},
                      train_dataset=random_corpus(tiny_config(), 2))
    with pytest.raises(ValueError, match="section.key=value"):
        load_settings(EXAMPLE_CONFIG, ["max_steps"])
    # YAML reads a bare `no` as false; strategies take it as "no"
    from fourm_hf.training.pretrain import build_training_arguments

    assert build_training_arguments({"eval_strategy": False, "save_strategy": False}, str(tmp_path)).eval_strategy == "no"
    with pytest.raises(ValueError, match="output_dir"):
        build_training_arguments({})
    with pytest.raises(ValueError, match="remove model.hidden_size"):
        build_model_config({"pretrained": str(tmp_path), "hidden_size": 64})
    with pytest.raises(ValueError, match="model.vocab_sizes names 'tok_edges'"):
        build_model_config({**TINY_MODEL, "vocab_sizes": {"tok_edges": 8}})


def test_missing_modality_column(tmp_path, corpus):
    with pytest.raises(ValueError, match="modality 'tok_normal' has no column 'tok_normal'"):
        build_trainer(tiny_settings(tmp_path), train_dataset=corpus.remove_columns("tok_normal"))
    with pytest.raises(ValueError, match="data.eval: modality 'rgb' has no column 'pixel_values'"):
        build_trainer(tiny_settings(tmp_path), train_dataset=corpus, eval_dataset=corpus.remove_columns("pixel_values"))


def test_token_id_beyond_the_vocabulary(tmp_path, corpus, config):
    depth = np.array(corpus["tok_depth"])
    depth[7, 3] = config.modality("tok_depth").vocab_size
    bad = corpus.remove_columns("tok_depth").add_column("tok_depth", list(depth))
    bad = bad.cast(corpus.features)
    with pytest.raises(ValueError, match=r"data.train: modality 'tok_depth' column 'tok_depth' holds token id 32, outside the vocabulary \[0, 32\)"):
        build_trainer(tiny_settings(tmp_path), train_dataset=bad)
    # a shuffled/selected view is checked row by row (the Arrow scan would also see hidden rows)
    with pytest.raises(ValueError, match="data.train: sample 0: modality 'tok_depth'.*token id 32"):
        build_trainer(tiny_settings(tmp_path), train_dataset=bad.select([7, 0, 1]))


def test_empty_dataset(tmp_path, corpus):
    with pytest.raises(ValueError, match="data.train: the dataset is empty"):
        build_trainer(tiny_settings(tmp_path), train_dataset=corpus.select([]))
    with pytest.raises(ValueError, match="data.eval: the dataset is empty"):
        build_trainer(tiny_settings(tmp_path), train_dataset=corpus, eval_dataset=corpus.select([]))


def test_budget_larger_than_available_tokens(tmp_path):
    model = {**TINY_MODEL, "input_modalities": ["caption"], "output_modalities": ["det"],
             "vocab_sizes": {"caption": 96, "det": 96}}
    settings = tiny_settings(tmp_path, masking={"strategy": "uniform", "input_budget": 20, "target_budget": 4})
    settings["model"] = model
    captions_only = random_corpus(build_model_config(model), 4, caption_length=(4, 8))
    with pytest.raises(ValueError, match=r"data.train: sample 0: input_budget 20 is larger than the \d+ tokens its input modalities \[.caption.\]"):
        build_trainer(settings, train_dataset=captions_only)
    # a budget no sample of this config could ever fill is refused when the collator is built
    settings["masking"]["input_budget"] = 25
    with pytest.raises(ValueError, match="input_budget 25 is larger than all the tokens"):
        build_trainer(settings, train_dataset=captions_only)


def test_trainer_refuses_remove_unused_columns(tmp_path, config, corpus):
    collator = build_collator(config, {"num_sentinels": 20})
    args = TrainingArguments(str(tmp_path), remove_unused_columns=True, **QUIET)
    with pytest.raises(ValueError, match="remove_unused_columns"):
        FourMTrainer(model=FourMModel(config), args=args, data_collator=collator, train_dataset=corpus)


def test_uint8_rgb_image_column_of_built_corpora(tmp_path, corpus, config):
    """A build-corpus style row stores the rgb crop as uint8 ``rgb_image``; it becomes pixel_values."""
    import datasets

    images = np.random.default_rng(0).integers(0, 256, (len(corpus), 32, 32, 3), dtype=np.uint8)
    columns = {name: corpus[name] for name in corpus.column_names if name != "pixel_values"}
    features = datasets.Features({**{n: corpus.features[n] for n in columns}, "rgb_image": datasets.Array3D((32, 32, 3), "uint8")})
    built = datasets.Dataset.from_dict({**columns, "rgb_image": images}, features=features)
    trainer = build_trainer(tiny_settings(tmp_path, masking={"strategy": "rgb2all"}), train_dataset=built)
    sample = trainer.train_dataset[4]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (images[4].transpose(2, 0, 1) / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(sample["pixel_values"], expected, atol=1e-5)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
