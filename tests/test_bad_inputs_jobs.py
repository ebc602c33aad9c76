"""Long jobs and the CLI: output paths checked up front with the user's path, stale ``<out>.tmp-<pid>``
folders cleaned on the next run, sane size bounds, a full disk named, every expected error one line;
uploads carry only what a user loads; assemble-ml4m refuses another feature model's global tokenizer."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from fourm_hf.cli import main as cli_main
from fourm_hf.cli import run_command
from fourm_hf.output_paths import check_output_dir, clean_stale_staging
from fourm_hf.upload_selection import upload_files


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"fourm-hf {command}: ") or err.startswith("fourm-hf: error:"), err
    return err


@pytest.mark.parametrize("arguments, message", [
    (["--num", "2", "--size", "100000"], r"multiple of 8, at least 32 and at most 2048 pixels"),
    (["--num", "2", "--size", "1024"], r"would hold 20\.5 GiB in memory; lower --shard-size to at most 97"),
])
def test_make_scenes_sizes_have_upper_bounds(tmp_path, capsys, arguments, message):
    assert cli_main(["make-scenes", *arguments, "--out", str(tmp_path / "scenes")]) == 2
    assert re.search(message, one_line_error(capsys, "make-scenes"))
    assert not (tmp_path / "scenes").exists() and not (tmp_path / "scenes.shards").exists()


@pytest.mark.parametrize("command, extra", [
    ("make-scenes", ["--num", "2", "--size", "32"]),
    ("train-text-tokenizer", None),
])
def test_an_unwritable_out_is_refused_up_front_with_the_users_path(tmp_path, capsys, command, extra):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    if extra is None:
        with pytest.raises(ValueError, match=rf"--out {out}: {blocker} is a file, not a folder"):
            check_output_dir(out, "train-text-tokenizer: --out")
        return
    assert cli_main([command, *extra, "--out", str(out)]) == 2
    assert f"--out {out}: {blocker} is a file, not a folder" in one_line_error(capsys, command)


def test_train_checks_its_output_dir_before_training(tmp_path, capsys):
    import yaml

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": {"preset": "tiny"}, "data": {"train": str(tmp_path / "corpus")},
                                      "training": {"output_dir": "/proc/fourm-train-out"}}))
    assert cli_main(["train", "--config", str(config)]) == 2
    err = one_line_error(capsys, "train")
    assert "--output-dir /proc/fourm-train-out: cannot create folders in /proc" in err


def test_a_folder_where_nothing_can_be_created_is_named():
    with pytest.raises(ValueError, match=r"--out /proc/fourm-out: cannot create folders in /proc"):
        check_output_dir("/proc/fourm-out")


def test_make_scenes_removes_what_a_killed_run_left(tmp_path):
    out = tmp_path / "scenes"
    stale = [tmp_path / f"scenes.tmp-{dead_pid()}", tmp_path / f".scenes.tmp-{dead_pid()}"]
    for folder in stale:
        folder.mkdir()
        (folder / "data-00000-of-00001.arrow").write_bytes(b"partial")
    mine = tmp_path / "scenes.tmp-1"  # pid 1 is alive: another job's, left alone
    mine.mkdir()
    assert cli_main(["make-scenes", "--num", "2", "--size", "32", "--out", str(out)]) == 0
    assert (out / "dataset_info.json").is_file()
    assert not any(folder.exists() for folder in stale)
    assert mine.exists()


def test_clean_stale_staging_only_matches_the_jobs_own_names(tmp_path):
    pid = dead_pid()
    own, other = tmp_path / f"corpus.tmp-{pid}", tmp_path / f"corpus2.tmp-{pid}"
    own.mkdir()
    other.mkdir()
    assert clean_stale_staging(tmp_path / "corpus") == [own]
    assert other.exists()


def test_a_full_disk_is_one_named_line(capsys):
    def write_to_a_full_disk(args):
        with open("/dev/full", "w") as handle:  # the kernel answers ENOSPC for every write
            handle.write("x" * 65536)
            handle.flush()

    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is not available on this system")
    assert run_command("make-scenes", write_to_a_full_disk, argparse.Namespace()) == 2
    err = one_line_error(capsys, "make-scenes")
    assert "no space left on the device" in err and "free some space" in err


def test_unexpected_errors_keep_their_traceback():
    def broken(args):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_command("make-scenes", broken, argparse.Namespace())


def test_convert_ml4m_prints_expected_errors_as_one_line(tmp_path, capsys):
    assert cli_main(["convert-ml4m", "--checkpoint", str(tmp_path / "missing.safetensors"),
                     "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, "convert-ml4m")


# ---- uploads ----------------------------------------------------------------------------------------------
def test_upload_selection_skips_trainer_state_and_checkpoints_and_refuses_pickles(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "README.md").write_text("card")
    (tmp_path / "modeling_fourm.py").write_text("code")
    for name in ("training_args.bin", "optimizer.pt", "rng_state.pth", "rng_state_1.pth", "scheduler.pt", ".hidden"):
        (tmp_path / name).write_bytes(b"x")
    for folder in ("checkpoint-2", "runs", ".checkpoint-staging"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.safetensors").write_bytes(b"x")
    (tmp_path / "vqvae" / "tok_rgb").mkdir(parents=True)
    (tmp_path / "vqvae" / "tok_rgb" / "model.safetensors").write_bytes(b"x")
    assert [p.as_posix() for p in upload_files(tmp_path)] == [
        "README.md", "config.json", "model.safetensors", "modeling_fourm.py", "vqvae/tok_rgb/model.safetensors"]
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"pytorch_model.bin: a pickle file; 4M checkpoints are uploaded as safetensors"):
        upload_files(tmp_path)


# ---- assemble-ml4m: a global tokenizer of another feature model ----------------------------------------------
def test_assemble_ml4m_refuses_the_dinov2_global_tokenizer_for_imagebind_global(tmp_path):
    import torch

    from fourm_hf.ml4m.tokenizer_fit import check_tokenizer_fits
    from fourm_hf.modalities import get_modality
    from fourm_hf.tokenizers.mlp_vqvae import FourMMLPVQVAE, FourMMLPVQVAEConfig
    from fourm_hf.tokenizers.released import FourMTokenizerModel
    from fourm_hf.tokenizers.released_layout import save_in_released_layout
    from fourm_hf.tokenizers.released_modalities import ReleasedModalityTokenizer

    from fourm_hf import FourMConfig

    torch.manual_seed(0)
    trunk = FourMConfig(hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_attention_heads=2,
                        input_modalities=["rgb", "tok_imagebind_global", "tok_dinov2_global"],
                        output_modalities=["tok_imagebind_global", "tok_dinov2_global"],
                        modality_specs={name: get_modality(name).replace(vocab_size=64).to_dict()
                                        for name in ("tok_imagebind_global", "tok_dinov2_global")})
    heads = trunk.num_positions("tok_imagebind_global")
    dinov2_width = get_modality("tok_dinov2_global").num_channels
    mlp = FourMMLPVQVAE(FourMMLPVQVAEConfig(enc_type="BottleneckMLP/B_1-Wi_16", dec_type="BottleneckMLP/B_1-Wi_16",
                                            n_channels=dinov2_width, latent_dim=4 * heads, num_codebooks=heads,
                                            codebook_size=64))
    save_in_released_layout(mlp.eval(), tmp_path / "dinov2_global")
    released = FourMTokenizerModel.from_pretrained(tmp_path / "dinov2_global")
    for name, refused in (("tok_imagebind_global", True), ("tok_dinov2_global", False)):
        tokenizer = ReleasedModalityTokenizer(released, name, image_size=trunk.image_size)
        if refused:
            with pytest.raises(ValueError, match=r"tokenizer for 'tok_imagebind_global': the tokenizer reads 768-wide "
                                                 r"global embeddings, those of DINOv2-B14-global; the model's "
                                                 r"tok_imagebind_global takes 1024-wide ones"):
                check_tokenizer_fits(trunk, name, tokenizer)
        else:
            check_tokenizer_fits(trunk, name, tokenizer)
