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
