"""The README's quickstart code runs as written (in a scratch folder, in a fresh process)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

from conftest import REPO_ROOT, subprocess_env


def _python_block_after(heading: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_quickstart_runs(tmp_path):
    code = _python_block_after("## Quickstart")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "my-4m" / "model.safetensors").exists()
    assert "tok_depth" in result.stdout


def _bash_block_after(heading: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)


# Keep the test fast: few scenes, few steps, small batches (the README's own values otherwise).
FAST_SCENES = "4"
FAST_TRAINING = ["training.max_steps=2", "training.per_device_train_batch_size=2", "training.per_device_eval_batch_size=2",
                 "training.eval_steps=1", "training.save_steps=2", "training.logging_steps=1",
                 "training.dataloader_num_workers=0", "data.validate_samples=4"]


def test_training_commands_run_on_a_fresh_clone(tmp_path):
    """The README's training commands, in order, in a folder that has only the repository's examples/
    (as a fresh clone): they render the scenes, build the corpus the config reads, and train."""
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    commands = [shlex.split(line) for line in _bash_block_after("## Training").splitlines()
                if line.startswith("fourm-hf ")]
    assert [command[1] for command in commands] == ["make-scenes"] * 2 + ["build-corpus"] * 2 + ["train"]
    argvs = []
    for command in commands:
        arguments = command[1:]
        if "--num" in arguments:
            arguments[arguments.index("--num") + 1] = FAST_SCENES
        if arguments[0] == "train":
            arguments += FAST_TRAINING  # later overrides win
        argvs.append(arguments)
    # one fresh process runs them one after the other, as the shell would (each must return 0)
    code = (
        "import sys; from fourm_hf import cli\n"
        f"for argv in {argvs!r}:\n"
        "    code = cli.main(argv)\n"
        "    if code: sys.exit(f'fourm-hf {argv[0]} returned {code}')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "corpus" / "tiny_scenes" / "train").is_dir()
    saved = sorted((tmp_path / "runs" / "tiny_scenes").rglob("model.safetensors"))
    assert saved, "the training command saved no model"


def test_released_model_commands_parse_and_match_their_tokenizers():
    """The released-model section's commands (they need the real weights, so they are not run here):
    each fourm-hf line parses with its subcommand's arguments, assemble-ml4m reads what convert-ml4m
    writes, and every downloaded tokenizer folder it names is matched to a modality by its name."""
    import argparse
    import importlib

    from fourm_hf import cli
    from fourm_hf.ml4m.assembly import modality_from_released_name, parse_tokenizer_argument

    lines = [line.split("#")[0].strip() for line in
             _bash_block_after("### Running the released 4M models").replace("\\\n", " ").splitlines()]
    loop = next(line for line in lines if line.startswith("for tokenizer in "))
    downloaded = {f"4M_tokenizers_{name}" for name in loop[len("for tokenizer in "):].split(";")[0].split()}
    assert any("huggingface-cli download EPFL-VILAB/4M-21_XL " in line for line in lines)
    commands = [shlex.split(line) for line in lines if line.startswith("fourm-hf ")]
    assert [command[1] for command in commands] == ["convert-ml4m", "assemble-ml4m"]
    parsed = {}
    for command in commands:
        parser = argparse.ArgumentParser(prog=command[1])
        importlib.import_module(cli.COMMANDS[command[1]][0]).add_arguments(parser)
        parsed[command[1]] = parser.parse_args(command[2:])
    assemble = parsed["assemble-ml4m"]
    assert assemble.model == parsed["convert-ml4m"].output
    modalities = {}
    for argument in assemble.tokenizers:
        modality, folder = parse_tokenizer_argument(argument)
        assert str(folder) in downloaded, f"{folder} is not downloaded by the section's loop {sorted(downloaded)}"
        modalities[modality or modality_from_released_name(folder)] = folder
    assert set(modalities) == {"tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip"}
    assert {parse_tokenizer_argument(a)[0] for a in assemble.feature_model} == {"tok_clip"}
