"""benchmarks/gpu_check.py: its CPU dry run writes the JSON and the table; without a GPU it refuses clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, subprocess_env

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def run(*args, cwd):
    env = subprocess_env()
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + ((":" + env["PYTHONPATH"]) if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_dry_run_writes_json_and_markdown(tmp_path):
    completed = run("--dry-run", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert set(report["sections"]) == {"train", "caption", "caption_x8", "guided", "rgb_to_all", "formats", "divae",
                                          "offloading"}
    assert not any("error" in section for section in report["sections"].values()), report["sections"]
    assert report["sections"]["offloading"]["restored_after_error"] is True
    assert 0 < report["sections"]["divae"]["bf16 fast max_abs_vs_fp32"] < 1.0
    assert report["sections"]["formats"]["bf16_identical_share"] > 0
    assert report["sections"]["train"]["sdpa"]["tokens_per_s"] > 0
    assert report["sections"]["caption"]["same_tokens"] and report["sections"]["guided"]["same_tokens"]
    assert report["sections"]["caption_x8"]["same_tokens"]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| train (batch 2) | sdpa |" in table and "| guided | naive |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the no-GPU refusal cannot be observed")
def test_without_a_gpu_it_exits_non_zero_with_a_message(tmp_path):
    completed = run("--out", str(tmp_path / "out"), cwd=tmp_path)
    assert completed.returncode == 2
    assert "no CUDA GPU is visible" in completed.stderr
    assert not (tmp_path / "out").exists()
