"""The README's quickstart code runs as written (in a scratch folder, in a fresh process)."""

from __future__ import annotations

import re
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
