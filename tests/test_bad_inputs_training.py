"""Training checkpoints are complete or absent: SIGKILL during a checkpoint save, then a rerun of the
same ``fourm-hf train`` command gives the weights of an uninterrupted run; reruns and their refusals."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import subprocess_env
from fourm_hf.cli import main as cli_main
from fourm_hf.training.checkpoints import FINAL_MODEL_STAGING, STAGING_DIR
from fourm_hf.training.pretrain import build_model_config, random_corpus

TINY_MODEL = dict(
    hidden_size=32, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
    vocab_sizes=dict(tok_rgb=32, tok_depth=16, tok_normal=16, tok_semseg=8, tok_clip=16, caption=64, det=64),
    max_lengths=dict(caption=16, det=16),
)

# Runs `fourm-hf train` in a child process that SIGKILLs itself right after one step of saving
# checkpoint-4 (the real save ran; the process dies before the next write).
KILLING_RUN = r"""
import os, signal, sys
from transformers.trainer_callback import TrainerState
from fourm_hf.cli import main
from fourm_hf.training.trainer import FourMTrainer

point, config = sys.argv[1], sys.argv[2]
targets = {"model": (FourMTrainer, "save_model"), "optimizer": (FourMTrainer, "_save_optimizer_and_scheduler"),
           "rng": (FourMTrainer, "_save_rng_state"), "trainer_state": (TrainerState, "save_to_json")}
owner, name = targets[point]
real = getattr(owner, name)

def then_kill(self, *args, **kwargs):
    result = real(self, *args, **kwargs)
    if "checkpoint-4" in str(args[0] if args else kwargs.get("output_dir", kwargs.get("json_path", ""))):
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(owner, name, then_kill)
sys.exit(main(["train", "--config", config]))
"""


# Runs `fourm-hf train` in a child process that SIGKILLs itself halfway through writing the final model.
KILLED_FINAL_SAVE = r"""
import os, signal, sys
from fourm_hf.cli import main
from fourm_hf.training.trainer import FourMTrainer

def dies_while_writing(self, output_dir=None, state_dict=None):
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "model.safetensors"), "wb") as handle:
        handle.write(b"half a file")
    os.kill(os.getpid(), signal.SIGKILL)

FourMTrainer._save = dies_while_writing
sys.exit(main(["train", "--config", sys.argv[1]]))
"""


def write_config(tmp_path, name: str) -> str:
    settings = {
        "model": dict(TINY_MODEL),
        "masking": {"strategy": "4m7", "input_budget": 16, "target_budget": 16, "seed": 0, "num_sentinels": 20},
        "data": {"train": str(tmp_path / "train")},
        "training": {"output_dir": str(tmp_path / name), "max_steps": 4, "save_strategy": "steps", "save_steps": 2,
                     "per_device_train_batch_size": 4, "learning_rate": 2e-3, "seed": 0, "data_seed": 3,
                     "report_to": [], "disable_tqdm": True, "dataloader_num_workers": 0, "dataloader_pin_memory": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    config = build_model_config(TINY_MODEL, {"input_budget": 16, "target_budget": 16})
    random_corpus(config, 12, seed=0).save_to_disk(str(folder / "train"))
    return folder


def run_cli(*arguments) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fourm_hf.cli", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env())


def test_sigkill_during_a_checkpoint_save_then_rerun_equals_an_uninterrupted_run(corpus_dir):
    reference_config = write_config(corpus_dir, "uninterrupted")
    done = run_cli("train", "--config", reference_config)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = load_file(str(corpus_dir / "uninterrupted" / "model.safetensors"))

    for point in ("model", "optimizer", "rng", "trainer_state"):
        config = write_config(corpus_dir, f"killed-{point}")
        out = corpus_dir / f"killed-{point}"
        killed = subprocess.run([sys.executable, "-c", KILLING_RUN, point, config], capture_output=True, text=True,
                                timeout=300, env=subprocess_env())
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-3000:])
        assert (out / "checkpoint-2" / "trainer_state.json").is_file()
        assert not (out / "checkpoint-4").exists(), f"a partial checkpoint-4 is visible after a kill at {point}"
        assert (out / STAGING_DIR / "checkpoint-4").is_dir()  # what the kill left, out of get_last_checkpoint's sight

        rerun = run_cli("train", "--config", config)  # the same command again
        assert rerun.returncode == 0, (point, rerun.stderr[-3000:])
        assert "resuming from" in rerun.stderr and "checkpoint-2" in rerun.stderr
        assert not (out / STAGING_DIR).exists()
        assert (out / "checkpoint-4" / "optimizer.pt").is_file()
        weights = load_file(str(out / "model.safetensors"))
        assert weights.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(weights[name], tensor), (point, name)


def test_sigkill_while_writing_the_final_model_leaves_the_earlier_files_whole(corpus_dir):
    """The final model is staged and renamed into place file by file: a kill halfway through writing it
    leaves the output folder's earlier model.safetensors as it was, and the next run removes the leftover."""
    config = write_config(corpus_dir, "final-save")
    assert cli_main(["train", "--config", config]) == 0
    out = corpus_dir / "final-save"
    written = (out / "model.safetensors").read_bytes()
    # the rerun of a complete run writes its final model again, and dies halfway through
    killed = subprocess.run([sys.executable, "-c", KILLED_FINAL_SAVE, config], capture_output=True, text=True,
                            timeout=300, env=subprocess_env())
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (out / "model.safetensors").read_bytes() == written
    assert (out / STAGING_DIR / FINAL_MODEL_STAGING / "model.safetensors").read_bytes() == b"half a file"

    assert cli_main(["train", "--config", config]) == 0
    assert not (out / STAGING_DIR).exists()
    assert (out / "model.safetensors").read_bytes() == written  # the same weights, written whole


def test_rerun_with_other_settings_is_refused_and_names_the_flag(corpus_dir, capsys):
    config = write_config(corpus_dir, "changed")
    assert cli_main(["train", "--config", config]) == 0
    changed = yaml.safe_load(open(config))
    changed["training"]["learning_rate"] = 1e-3
    with open(config, "w") as handle:
        yaml.safe_dump(changed, handle)
    capsys.readouterr()
    assert cli_main(["train", "--config", config]) == 2
    message = capsys.readouterr().err
    assert "--overwrite-output-dir" in message and "training.learning_rate" in message
    assert message.count("\n") == 1  # one line, no traceback
    assert cli_main(["train", "--config", config, "--overwrite-output-dir"]) == 0
    saved = yaml.safe_load((corpus_dir / "changed" / "fourm_pretrain.yaml").read_text())
    assert saved["training"]["learning_rate"] == 1e-3


def test_resume_true_skips_a_leftover_staging_folder(corpus_dir):
    """A staging folder from a killed save does not count as a checkpoint; the trainer removes it."""
    config = write_config(corpus_dir, "leftover")
    assert cli_main(["train", "--config", config]) == 0
    leftover = corpus_dir / "leftover" / STAGING_DIR / "checkpoint-6"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert cli_main(["train", "--config", config]) == 0
    assert not leftover.exists()
    assert sorted(p.name for p in (corpus_dir / "leftover").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_staging_a_train_output_folder_for_upload_lists_no_pickle_and_no_checkpoint(corpus_dir, tmp_path):
    from fourm_hf.hub import _stage
    from fourm_hf.upload_selection import PICKLE_SUFFIXES

    config = write_config(corpus_dir, "upload")
    assert cli_main(["train", "--config", config]) == 0
    out = corpus_dir / "upload"
    assert (out / "checkpoint-2" / "optimizer.pt").is_file() and (out / "training_args.bin").is_file()
    staged = tmp_path / "staged"
    _stage(out, staged, None)
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)], files
    assert not [f for f in files if f.startswith(("checkpoint-", "."))], files
