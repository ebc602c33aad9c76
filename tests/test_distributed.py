"""Distributed and accumulated training equal the single-process full-batch run.

The test launches this very file under ``torchrun --nproc_per_node 2`` (gloo, CPU): each process
runs one real ``FourMTrainer`` step on its half of the global batch and rank 0 writes the
gradients (after DDP's all-reduce), the logged loss and the weights after the step. They must
equal the single-process run on the same global batch (per-device batch 4 x 1 process vs 2 x 2).
Gradients are compared, not only weights: Adam's first update barely depends on the gradient's
scale, so a wrong world-size factor would hide in the weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

GLOBAL_BATCH = 4
NUM_SAMPLES = 16


class GradientRecorder(TrainerCallback):
    """Copies every parameter's gradient just before the first optimizer step."""

    def __init__(self):
        self.gradients = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.gradients is None:
            self.gradients = {
                name: param.grad.detach().clone() for name, param in model.named_parameters() if param.grad is not None
            }


def run_steps(out_dir: str, per_device_batch: int, gradient_accumulation_steps: int = 1, global_loss_normalization: bool = True,
              steps: int = 1) -> dict:
    """Train ``steps`` steps of a tiny 4M (1 CPU thread); returns gradients of step 1, weights, losses."""
    from fourm_hf.testing_utils import tiny_config
    from fourm_hf.training.pretrain import build_collator, build_training_arguments, prepare_dataset, random_corpus
    from fourm_hf.training.trainer import FourMTrainer
    from fourm_hf import FourMModel

    torch.set_num_threads(1)
    config = tiny_config()
    collator = build_collator(config, {"strategy": "4m7", "seed": 3, "num_sentinels": 20})
    dataset = prepare_dataset(random_corpus(config, NUM_SAMPLES, seed=5), config, collator, "train")
    torch.manual_seed(0)  # the model init is the only consumer of the global RNG here
    model = FourMModel(config)
    # fourm-hf train's arguments: under torchrun on this GPU-less machine they must turn on use_cpu (gloo)
    args = build_training_arguments(dict(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant",
        max_grad_norm=0.0, logging_steps=1, save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False, seed=11,
    ))
    recorder = GradientRecorder()
    trainer = FourMTrainer(
        model=model, args=args, data_collator=collator, train_dataset=dataset, callbacks=[recorder],
        global_loss_normalization=global_loss_normalization,
    )
    trainer.train()
    losses = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "gradients": recorder.gradients,
        "weights": {name: param.detach().clone() for name, param in trainer.model.named_parameters()},
        "losses": losses,
        "rank": trainer.args.process_index,
        "world_size": trainer.accelerator.num_processes,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_close(actual: dict, expected: dict, atol: float, what: str):
    assert actual.keys() == expected.keys(), f"{what}: different parameter sets"
    for name in expected:
        difference = (actual[name] - expected[name]).abs().max().item()
        assert difference <= atol, f"{what} of {name} differ by {difference:.3g} (> {atol})"


def _max_difference(actual: dict, expected: dict) -> float:
    return max((actual[name] - expected[name]).abs().max().item() for name in expected)


def test_two_processes_equal_one_process(tmp_path):
    """About 20 s (55 s on a loaded 2-core machine): mostly two fresh processes importing torch + transformers."""
    out = tmp_path / "ddp"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, str(out),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    single = run_steps(str(tmp_path / "single"), per_device_batch=GLOBAL_BATCH)
    ddp_gradients = load_file(str(out / "gradients.safetensors"))
    ddp_weights = load_file(str(out / "weights.safetensors"))
    ddp_loss = json.loads((out / "losses.json").read_text())[0]["loss"]

    scale = max(g.abs().max().item() for g in single["gradients"].values())
    _assert_close(ddp_gradients, single["gradients"], atol=1e-6 * max(scale, 1.0), what="gradients")
    _assert_close(ddp_weights, single["weights"], atol=1e-6, what="weights after one step")
    assert ddp_loss == pytest.approx(single["losses"][0]["loss"], rel=1e-6, abs=1e-6)
    # per-modality training logs are summed over both processes too
    for key, value in single["losses"][0].items():
        if key.startswith("loss_"):
            assert json.loads((out / "losses.json").read_text())[0][key] == pytest.approx(value, rel=1e-5)


def test_gradient_accumulation_equals_full_batch(tmp_path):
    full = run_steps(str(tmp_path / "full"), per_device_batch=GLOBAL_BATCH)
    accumulated = run_steps(str(tmp_path / "accumulated"), per_device_batch=1, gradient_accumulation_steps=GLOBAL_BATCH)
    scale = max(g.abs().max().item() for g in full["gradients"].values())
    _assert_close(accumulated["gradients"], full["gradients"], atol=1e-6 * max(scale, 1.0), what="gradients")
    assert accumulated["losses"][0]["loss"] == pytest.approx(full["losses"][0]["loss"], rel=1e-6)

    # Without the global normalisation, the mean of per-micro-batch means is a different loss.
    naive = run_steps(str(tmp_path / "naive"), per_device_batch=1, gradient_accumulation_steps=GLOBAL_BATCH,
                      global_loss_normalization=False)
    assert _max_difference(naive["gradients"], full["gradients"]) > 1e-4 * scale


# ---- FSDP2 (and DeepSpeed) through `accelerate launch ... fourm-hf train` ------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[1]
FSDP_CPU_CONFIG = REPO_ROOT / "examples" / "configs" / "fsdp_cpu.yaml"
DEEPSPEED_CPU_CONFIG = REPO_ROOT / "examples" / "configs" / "deepspeed_zero2_cpu.yaml"
TINY_MODEL = dict(
    hidden_size=64, num_encoder_layers=2, num_decoder_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    vocab_sizes=dict(tok_rgb=64, tok_depth=32, tok_normal=32, tok_semseg=16, tok_clip=32, caption=96, det=96),
    max_lengths=dict(caption=24, det=24),
)
LAUNCH_STEPS = 4


def _train_settings(train_dir: Path, output_dir: Path, per_device_batch: int) -> dict:
    """A tiny `fourm-hf train` config: 4 SGD steps of a global batch of 4, checkpoints at steps 2 and 4.

    SGD keeps the update linear in the gradient (Adam's first steps would magnify rounding in tiny gradients);
    momentum gives it a state to checkpoint (torch cannot load a full FSDP2 optimizer state without tensors).
    """
    return {
        "model": dict(TINY_MODEL),
        "masking": {"strategy": "4m7", "input_budget": 24, "target_budget": 24, "seed": 3, "num_sentinels": 20},
        "data": {"train": str(train_dir)},
        "training": dict(
            output_dir=str(output_dir), max_steps=LAUNCH_STEPS, per_device_train_batch_size=per_device_batch,
            learning_rate=1e-2, optim="sgd", optim_args="momentum=0.9", lr_scheduler_type="constant",
            warmup_steps=0, max_grad_norm=0.0,
            logging_steps=1, save_strategy="steps", save_steps=2, seed=11, data_seed=7, disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=False, report_to=[],
        ),
    }


def _launch_train(accelerate_config: Path, train_config: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file ... -m fourm_hf.cli train --config ...` on 2 CPU processes (gloo)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
        "-m", "fourm_hf.cli", "train", "--config", str(train_config), "--output-dir", str(output_dir), *extra,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _step_losses(checkpoint: Path) -> dict[int, float]:
    """Step -> logged training loss, from a checkpoint's trainer_state.json."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def _prepare_runs(root: Path) -> None:
    """The corpus and the two `fourm-hf train` configs: two.yaml (per-device batch 2), one.yaml (batch 4)."""
    import yaml

    from fourm_hf.training.pretrain import build_model_config, random_corpus

    config = build_model_config(TINY_MODEL, {"input_budget": 24, "target_budget": 24})
    random_corpus(config, NUM_SAMPLES, seed=5).save_to_disk(str(root / "train"))
    for name, batch in (("two", GLOBAL_BATCH // 2), ("one", GLOBAL_BATCH)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(_train_settings(root / "train", root / name, batch)))


def _launched_run(root: Path, accelerate_config: Path, name: str) -> Path:
    """One 2-process run of `fourm-hf train` (4 steps, checkpoints at 2 and 4) into root/name."""
    completed = _launch_train(accelerate_config, root / "two.yaml", root / name)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return root / name


def _assert_equals_one_process(launched: Path, root: Path, tmp_path: Path) -> None:
    """Per-step losses and final weights of a 2-process run equal one process on the whole batch."""
    from fourm_hf import FourMModel
    from fourm_hf.cli import main as cli_main

    assert cli_main(["train", "--config", str(root / "one.yaml"), "--output-dir", str(tmp_path / "one")]) == 0
    single_losses = _step_losses(tmp_path / "one" / f"checkpoint-{LAUNCH_STEPS}")
    launched_losses = _step_losses(launched / f"checkpoint-{LAUNCH_STEPS}")
    assert sorted(launched_losses) == list(range(1, LAUNCH_STEPS + 1))
    for step, loss in single_losses.items():
        assert launched_losses[step] == pytest.approx(loss, rel=1e-6, abs=1e-6), f"loss of step {step}"

    # the final folder holds a full (gathered) model that from_pretrained loads; its weights are the single run's
    single = load_file(str(tmp_path / "one" / "model.safetensors"))
    gathered = load_file(str(launched / "model.safetensors"))
    _assert_close(gathered, single, atol=1e-6, what="weights after 4 steps")
    model = FourMModel.from_pretrained(launched)
    _assert_close({name: param.detach() for name, param in model.state_dict().items()}, single, atol=1e-6,
                  what="from_pretrained weights")
    # so does each checkpoint
    assert load_file(str(launched / "checkpoint-2" / "model.safetensors")).keys() == single.keys()


def _assert_resume_is_exact(launched: Path, root: Path, accelerate_config: Path, tmp_path: Path) -> None:
    """Resuming from the step-2 checkpoint alone (as after a kill) gives steps 3-4 of the uninterrupted run exactly."""
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(launched / "checkpoint-2", resumed / "checkpoint-2")  # all that survives a kill during step 3
    completed = _launch_train(accelerate_config, root / "two.yaml", resumed, "--resume-from-checkpoint")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    expected, actual = _step_losses(launched / "checkpoint-4"), _step_losses(resumed / "checkpoint-4")
    assert {step: actual[step] for step in (3, 4)} == {step: expected[step] for step in (3, 4)}
    final, uninterrupted = load_file(str(resumed / "model.safetensors")), load_file(str(launched / "model.safetensors"))
    assert final.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(final[name], tensor), name


@pytest.fixture(scope="module")
def launch_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("launched")
    _prepare_runs(root)
    return root


@pytest.fixture(scope="module")
def fsdp_run(launch_root):
    """The 2-process FSDP2 run (examples/configs/fsdp_cpu.yaml); about 15 s idle, 35 s loaded."""
    return _launched_run(launch_root, FSDP_CPU_CONFIG, "fsdp")


def test_fsdp2_two_processes_equal_one_process(fsdp_run, launch_root, tmp_path):
    """`fourm-hf train` under FSDP2 (2 CPU processes, per-device batch 2) = one process with batch 4, step by step."""
    # It really was FSDP: accelerate's FSDP checkpoint files, not DDP's plain optimizer.pt
    assert (fsdp_run / "checkpoint-2" / "pytorch_model_fsdp.bin").is_file()
    assert not (fsdp_run / "checkpoint-2" / "optimizer.pt").exists()
    _assert_equals_one_process(fsdp_run, launch_root, tmp_path)


def test_fsdp2_resume_continues_identically(fsdp_run, launch_root, tmp_path):
    _assert_resume_is_exact(fsdp_run, launch_root, FSDP_CPU_CONFIG, tmp_path)


def test_fsdp2_sharded_checkpoints_still_give_a_full_final_model(fsdp_run, launch_root, tmp_path):
    """SHARDED_STATE_DICT: checkpoints are per-rank shards; the final folder still holds one full model.safetensors."""
    from fourm_hf import FourMModel

    config = tmp_path / "fsdp_sharded.yaml"
    config.write_text(FSDP_CPU_CONFIG.read_text().replace("FULL_STATE_DICT", "SHARDED_STATE_DICT"))
    launched = _launch_train(config, launch_root / "two.yaml", tmp_path / "sharded", "training.max_steps=2")
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert (tmp_path / "sharded" / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir()
    assert not (tmp_path / "sharded" / "checkpoint-2" / "model.safetensors").exists()
    assert _step_losses(tmp_path / "sharded" / "checkpoint-2") == _step_losses(fsdp_run / "checkpoint-2")
    model = FourMModel.from_pretrained(tmp_path / "sharded")
    gathered = load_file(str(tmp_path / "sharded" / "model.safetensors"))
    assert gathered.keys() == model.state_dict().keys()


def test_requested_sharding_that_did_not_happen_is_refused(tmp_path, monkeypatch):
    """A launch that asks for DeepSpeed/FSDP but got a replicating accelerator must not train silently."""
    from fourm_hf.testing_utils import tiny_config
    from fourm_hf.training.pretrain import build_collator, build_training_arguments, prepare_dataset, random_corpus
    from fourm_hf.training.sharding import check_requested_sharding
    from fourm_hf.training.trainer import FourMTrainer
    from fourm_hf import FourMModel

    config = tiny_config()
    collator = build_collator(config, {"strategy": "4m7", "seed": 3, "num_sentinels": 20})
    dataset = prepare_dataset(random_corpus(config, 4, seed=5), config, collator, "train")
    args = build_training_arguments(dict(output_dir=str(tmp_path), max_steps=1, report_to=[], save_strategy="no"))
    trainer = FourMTrainer(model=FourMModel(config), args=args, data_collator=collator, train_dataset=dataset)
    check_requested_sharding(trainer.accelerator, trainer.args)  # nothing asked, nothing to refuse
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match="asked for deepspeed but accelerate set up NO"):
        check_requested_sharding(trainer.accelerator, trainer.args)


def _deepspeed_or_skip():
    """Skip (with the reason) where deepspeed is not installed or cannot be imported."""
    try:
        import deepspeed  # noqa: F401
    except Exception as error:  # an sdist built against another torch fails at import, not only ImportError
        pytest.skip(f"deepspeed is not usable here ({type(error).__name__}: {error}); "
                    "pip install --no-build-isolation 'fourm-hf[deepspeed]'")


@pytest.fixture(scope="module")
def deepspeed_run(launch_root):
    """The 2-process DeepSpeed ZeRO-2 run (examples/configs/deepspeed_zero2_cpu.yaml)."""
    _deepspeed_or_skip()
    return _launched_run(launch_root, DEEPSPEED_CPU_CONFIG, "deepspeed")


def test_deepspeed_zero2_two_processes_equal_one_process(deepspeed_run, launch_root, tmp_path):
    assert (deepspeed_run / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own ZeRO checkpoint
    _assert_equals_one_process(deepspeed_run, launch_root, tmp_path)


def test_deepspeed_zero2_resume_continues_identically(deepspeed_run, launch_root, tmp_path):
    _assert_resume_is_exact(deepspeed_run, launch_root, DEEPSPEED_CPU_CONFIG, tmp_path)


def _worker(out_dir: str):
    result = run_steps(out_dir, per_device_batch=GLOBAL_BATCH // 2)
    assert result["world_size"] == 2, "torchrun did not give a distributed Trainer"
    if result["rank"] == 0:
        save_file({k: v.contiguous() for k, v in result["gradients"].items()}, str(Path(out_dir) / "gradients.safetensors"))
        save_file({k: v.contiguous() for k, v in result["weights"].items()}, str(Path(out_dir) / "weights.safetensors"))
        (Path(out_dir) / "losses.json").write_text(json.dumps(result["losses"]))
    # Tear the process group down before exiting: gloo threads still alive at interpreter exit
    # abort the process ("terminate called without an active exception") now and then.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
