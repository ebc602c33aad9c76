"""Fine-tuning released trunks from the training YAML (``model.pretrained``: a released folder, converted on the fly).

The trunks are the released-layout folders discovered under ../shared/fixtures/ml4m (fm_4m21_tiny, fm_sr_tiny);
the corpus is a small synthetic one in each trunk's layout (``random_corpus``: every column the shape its
modality needs). Covered: 30 steps lower the loss, resuming from step 10 is exact, 2-process DDP equals one
process on the 4M-21 layout, a new modality's frozen warm-up leaves the trunk unchanged, lengths in tokens,
and named errors before the first step.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fourm_hf.data.synthetic_corpus import random_corpus
from fourm_hf.training.finetune_settings import is_reference_folder, parse_token_count
from fourm_hf.training.pretrain import build_model_config, build_trainer

from conftest import SHARED_DIR, subprocess_env

FIXTURE_DIR = Path(os.environ.get("FOURM_ML4M_FIXTURES", SHARED_DIR / "fixtures" / "ml4m"))
RELEASED = sorted(p for p in FIXTURE_DIR.iterdir() if is_reference_folder(p)) if FIXTURE_DIR.is_dir() else []
BUDGETS = {"input_budget": 64, "target_budget": 64}


def released_params():
    if not RELEASED:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no released-layout trunks in {FIXTURE_DIR} (../shared absent)"))]
    return [pytest.param(folder, id=folder.name) for folder in RELEASED]


@functools.cache
def _fourm21_folder() -> Path | None:
    for folder in RELEASED:
        if "t5_caption" in build_model_config({"pretrained": str(folder)}).modality_names:
            return folder
    return None


def fourm21_folder() -> Path:
    if _fourm21_folder() is None:
        pytest.skip(f"no 4M-21-layout trunk in {FIXTURE_DIR}")
    return _fourm21_folder()


_CORPORA = {}


def corpus_for(folder: Path, extra=()):
    key = (folder.name, tuple(extra))
    if key not in _CORPORA:
        settings = {"pretrained": str(folder), **({"add_modalities": list(extra)} if extra else {})}
        _CORPORA[key] = random_corpus(build_model_config(settings), 16, seed=0)
    return _CORPORA[key]


def settings_for(folder: Path, output_dir: Path, **training) -> dict:
    strategy = "mix_mod21_all2allmix_rgb2all_capT5bias" if folder == _fourm21_folder() else "all2all"
    return {
        "model": {"pretrained": str(folder)},
        "masking": {"strategy": strategy, **BUDGETS, "seed": 2},
        "training": {**dict(
            output_dir=str(output_dir), max_steps=30, per_device_train_batch_size=4, learning_rate=2e-3,
            lr_scheduler_type="constant", warmup_steps=0, logging_steps=5, save_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=False, seed=1, data_seed=3,
        ), **training},
    }


def trunk_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("folder", released_params())
def test_thirty_steps_lower_the_loss(folder, tmp_path):
    corpus = corpus_for(folder)
    trainer = build_trainer(settings_for(folder, tmp_path), train_dataset=corpus, eval_dataset=corpus.select(range(8)))
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert trainer.state.global_step == 30
    assert after < before - 0.3, (before, after)


@pytest.mark.parametrize("folder", released_params())
def test_resume_from_step_10_gives_identical_weights(folder, tmp_path):
    corpus = corpus_for(folder)
    settings = settings_for(folder, tmp_path / "full", max_steps=20, save_strategy="steps", save_steps=10)
    full = build_trainer(settings, train_dataset=corpus)
    full.train()
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-10", resumed_dir / "checkpoint-10")  # all a kill at step 11 leaves
    resumed = build_trainer(settings_for(folder, resumed_dir, max_steps=20, save_strategy="steps", save_steps=10),
                            train_dataset=corpus)
    resumed.train(resume_from_checkpoint=str(resumed_dir / "checkpoint-10"))
    expected, actual = trunk_weights(full.model), trunk_weights(resumed.model)
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def test_frozen_warm_up_trains_only_the_new_modality(tmp_path):
    from fourm_hf.ml4m.conversion import load_reference_model, resolve_reference_files

    folder = fourm21_folder()
    original = trunk_weights(load_reference_model(*resolve_reference_files(str(folder))))
    corpus = corpus_for(folder, extra=("tok_rgb@448",))
    settings = settings_for(folder, tmp_path / "warm", max_steps=4, weight_decay=0.1)
    settings["model"].update(add_modalities=["tok_rgb@448"], frozen_model_steps=4)
    trainer = build_trainer(settings, train_dataset=corpus)
    added = trunk_weights(trainer.model)
    trainer.train()
    after = trunk_weights(trainer.model)
    new = {name for name in after if name not in original}
    assert new and all(".tok_rgb@448." in name for name in new)
    for name, tensor in original.items():
        assert torch.equal(after[name], tensor), f"trunk parameter {name} changed during the warm-up"
    assert any(not torch.equal(after[name], added[name]) for name in new)
    assert "tok_rgb@448" in trainer.model.config.output_modalities

    # in tokens: 1000 tokens at 512 per step (64 + 64 tokens x 4 samples) = 2 frozen steps, then all train
    settings = settings_for(folder, tmp_path / "tokens", max_steps=4)
    settings["model"].update(add_modalities=["tok_rgb@448"], frozen_model_tokens="1K")
    trainer = build_trainer(settings, train_dataset=corpus)
    warmups = [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "FrozenWarmupCallback"]
    assert [cb.frozen_steps for cb in warmups] == [2]
    trainer.train()
    after = trunk_weights(trainer.model)
    assert any(not torch.equal(after[name], tensor) for name, tensor in original.items())


def test_training_length_in_tokens(tmp_path):
    folder = fourm21_folder()
    settings = settings_for(folder, tmp_path, total_tokens="5000", warmup_tokens=1.1e-6)
    del settings["training"]["max_steps"], settings["training"]["warmup_steps"]
    trainer = build_trainer(settings, train_dataset=corpus_for(folder))
    assert trainer.args.max_steps == 10  # ceil(5000 / 512)
    assert trainer.args.warmup_steps == 3  # ceil(1100 / 512)
    assert parse_token_count("3.2M", "x") == 3_200_000 and parse_token_count(2, "x") == 2_000_000_000


def _with_column(corpus, name, values):
    return corpus.remove_columns(name).add_column(name, values)


@pytest.mark.parametrize("case", ["grid_size", "t5_width", "alphas", "budget", "frozen_alone", "tokens_and_steps",
                                  "loss_type", "not_a_folder"])
def test_bad_input_is_a_named_error_before_the_first_step(case, tmp_path):
    folder = fourm21_folder()
    corpus = corpus_for(folder)
    settings = settings_for(folder, tmp_path / "out")
    n = len(corpus)
    if case == "grid_size":
        corpus, message = _with_column(corpus, "tok_dinov2", [[0] * 196] * n), \
            "data.train: sample 0: modality 'tok_dinov2' field 'tok_dinov2' has 196 tokens, expected 256 \\(its 16x16 grid"
    elif case == "t5_width":
        corpus, message = _with_column(corpus, "t5_caption", [[[0.0] * 512] * 3] * n), \
            "modality 't5_caption' field 't5_caption' has shape \\(3, 512\\), expected \\(N, 4096\\)"
    elif case == "alphas":
        bad = {"sampling_weights": [1.0], "alphas_mixture": {"rgb@224": {"input_alphas": [-1.0], "target_alphas": [0.0]}}}
        path = tmp_path / "bad_alphas.yaml"
        path.write_text(yaml.safe_dump(bad))
        settings["masking"]["strategy"] = str(path)
        message = "bad_alphas.yaml: modality 'rgb@224' input_alphas\\[0\\] must be a finite number >= 0"
    elif case == "budget":
        settings["masking"]["input_budget"] = 100_000
        message = "input_budget 100000 is larger than all the tokens .* the model's maximum"
    elif case == "frozen_alone":
        settings["model"]["frozen_model_steps"] = 3
        message = "frozen_model_steps / frozen_model_tokens warm up new modalities: set model.add_modalities"
    elif case == "tokens_and_steps":
        settings["training"]["total_tokens"] = "10K"
        message = "give total_tokens or max_steps, not both"
    elif case == "loss_type":
        settings["model"]["loss_type"] = "mean"
        message = "model.loss_type must be one of \\['mod', 'token'\\]"
    else:
        settings["model"]["pretrained"] = str(tmp_path)
        message = "model.pretrained: .* is not a folder with a config.json"
    with pytest.raises(ValueError, match=message):
        build_trainer(settings, train_dataset=corpus)


def test_loss_type_token_sets_the_loss_averaging(tmp_path):
    folder = fourm21_folder()
    settings = settings_for(folder, tmp_path)
    settings["model"]["loss_type"] = "token"
    assert build_trainer(settings, train_dataset=corpus_for(folder)).model.config.loss_averaging == "token"


FSDP_CPU_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "configs" / "fsdp_cpu.yaml"


def _launcher(kind: str) -> list[str]:
    if kind == "ddp":
        return ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port())]
    return ["-m", "accelerate.commands.launch", "--config_file", str(FSDP_CPU_CONFIG), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(_free_port())]


@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_processes_equal_one_process_on_the_4m21_layout(kind, tmp_path):
    """2 CPU processes (gloo; torchrun DDP or accelerate FSDP2), `fourm-hf train` on the released 4M-21 trunk
    (converted on the fly): per-device batch 2 x 2 processes = batch 4 x 1 process, weights after 3 SGD steps."""
    folder = fourm21_folder()
    corpus_for(folder).save_to_disk(str(tmp_path / "train"))
    for name, batch in (("two", 2), ("one", 4)):
        settings = settings_for(folder, tmp_path / name, max_steps=3, per_device_train_batch_size=batch)
        settings["training"].update(optim="sgd", learning_rate=0.05, max_grad_norm=0.0, save_strategy="no")
        settings["data"] = {"train": str(tmp_path / "train")}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(settings))
    env = dict(subprocess_env(), GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    command = [sys.executable, *_launcher(kind), "-m", "fourm_hf.cli", "train", "--config", str(tmp_path / "two.yaml")]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    completed = subprocess.run([sys.executable, "-m", "fourm_hf.cli", "train", "--config", str(tmp_path / "one.yaml")],
                               env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    two, one = load_file(str(tmp_path / "two" / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    assert two.keys() == one.keys()
    for name, tensor in one.items():
        assert torch.allclose(two[name], tensor, atol=1e-6), name
    from fourm_hf.ml4m.conversion import load_reference_model, resolve_reference_files

    converted = trunk_weights(load_reference_model(*resolve_reference_files(str(folder))))
    assert any(not torch.equal(one[name], tensor) for name, tensor in converted.items())  # the 3 steps did train


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fsdp2_frozen_warm_up_and_exact_resume_on_the_4m21_layout(tmp_path):
    """2 FSDP2 processes: a new modality's warm-up (step 1) leaves the trunk unchanged; resuming from the
    step-2 checkpoint alone gives the uninterrupted run's final weights (step 3) exactly.

    (A checkpoint inside the warm-up holds no optimizer state for the trunk, which torch's sharded
    optimizer loading refuses: under FSDP2 resume from a checkpoint after the warm-up; docs/finetuning.md.)
    """
    from fourm_hf.ml4m.conversion import load_reference_model, resolve_reference_files

    folder = fourm21_folder()
    corpus_for(folder, extra=("tok_rgb@448",)).save_to_disk(str(tmp_path / "train"))
    settings = settings_for(folder, tmp_path / "run", max_steps=3, per_device_train_batch_size=2, save_strategy="steps",
                            save_steps=1, learning_rate=1e-3)
    settings["model"].update(add_modalities=["tok_rgb@448"], frozen_model_steps=1)
    settings["data"] = {"train": str(tmp_path / "train")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    env = dict(subprocess_env(), GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")

    def launch(output_dir: Path, *extra: str):
        command = [sys.executable, *_launcher("fsdp2"), "-m", "fourm_hf.cli", "train", "--config", str(tmp_path / "run.yaml"),
                   "--output-dir", str(output_dir), *extra]
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    launch(tmp_path / "run")
    original = trunk_weights(load_reference_model(*resolve_reference_files(str(folder))))
    warmed = load_file(str(tmp_path / "run" / "checkpoint-1" / "model.safetensors"))
    for name, tensor in original.items():
        assert torch.equal(warmed[name], tensor), f"trunk parameter {name} changed during the FSDP2 warm-up"
    final = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert any(not torch.equal(final[name], tensor) for name, tensor in original.items())  # then all trained

    shutil.copytree(tmp_path / "run" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    launch(tmp_path / "resumed", "--resume-from-checkpoint")
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert resumed.keys() == final.keys()
    for name, tensor in final.items():
        assert torch.equal(resumed[name], tensor), name
