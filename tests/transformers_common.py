"""transformers' own common test mixins, taken from the sdist of the installed transformers version.

The files are not part of this repository: :func:`prepare` downloads the sdist from PyPI once
(``pip download --no-deps --no-binary :all: transformers==<installed>``), extracts its top-level
``tests/*.py`` into a cache folder as the package ``hf_common_tests`` and puts that folder on
``sys.path``. ``.ci/run`` runs this file before pytest (``python tests/transformers_common.py``);
the test modules call :func:`import_common`, which skips them with the reason when the sdist cannot
be had (no network, no pip).

The sdist ships only the top-level test files, not the helper modules they import from the
transformers repository. For those, small stand-ins are written next to them (see ``STAND_INS``):
empty export/generation mixins (4M does not generate through ``GenerationMixin``, and export tests
are not run), the common config kwargs (non-default values of ``PreTrainedConfig``'s general
fields), and ``url_to_local_path`` returning the URL (no Hub fixtures offline: tests that need a
downloaded image are skipped in our modules).

Cache folder: ``$FOURM_HF_TRANSFORMERS_TESTS`` or ``~/.cache/fourm-hf/transformers-tests``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "hf_common_tests"
VERSION = transformers.__version__

STAND_INS = {
    f"{PACKAGE}/exporters/__init__.py": "",
    f"{PACKAGE}/exporters/test_export.py": (
        '"""Stand-in (not in the sdist): torch.export tests are not run on 4M."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    f"{PACKAGE}/generation/__init__.py": "",
    f"{PACKAGE}/generation/test_utils.py": (
        '"""Stand-in (not in the sdist): 4M does not generate through GenerationMixin."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    f"{PACKAGE}/utils/__init__.py": "",
    f"{PACKAGE}/utils/test_configuration_utils.py": (
        '"""Stand-in (not in the sdist): a non-default value for each general PreTrainedConfig field."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n    "output_hidden_states": True,\n    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n    "architectures": ["BertModel"],\n'
        '    "id2label": {0: "label"},\n    "label2id": {"label": "0"},\n    "problem_type": "regression",\n}\n'
    ),
    "utils/fetch_hub_objects_for_ci.py": (
        '"""Stand-in (not in the sdist): no local Hub fixture cache, the URL is returned as it is."""\n\n\n'
        "def url_to_local_path(url, *args, **kwargs):\n    return url\n"
    ),
}


def cache_root() -> Path:
    base = os.environ.get("FOURM_HF_TRANSFORMERS_TESTS") or Path.home() / ".cache" / "fourm-hf" / "transformers-tests"
    return Path(base) / VERSION


def _download_sdist(folder: Path) -> Path:
    """The transformers sdist of the installed version, downloaded into ``folder`` (RuntimeError if pip fails)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
               f"transformers=={VERSION}", "-d", str(folder), "--quiet"]
    existing = sorted(folder.glob(f"transformers-{VERSION}.tar.gz"))
    if not existing:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
        existing = sorted(folder.glob(f"transformers-{VERSION}.tar.gz"))
        if not existing:
            raise RuntimeError(f"pip download of transformers=={VERSION} failed: {completed.stderr.strip()[-500:]}")
    return existing[0]


def prepare(download: bool = True) -> Path:
    """Folder holding ``hf_common_tests`` (extracted once per transformers version), put on ``sys.path``."""
    root = cache_root()
    marker = root / PACKAGE / ".complete"
    if not marker.exists():
        if not download:
            raise RuntimeError(f"transformers {VERSION} common tests are not in {root} (run tests/transformers_common.py)")
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
        try:
            sdist = _download_sdist(root.parent)
            prefix = f"transformers-{VERSION}/tests/"
            with tarfile.open(sdist) as archive:
                for member in archive.getmembers():
                    name = member.name[len(prefix):] if member.name.startswith(prefix) else ""
                    if member.isfile() and name.endswith(".py") and "/" not in name:
                        target = staging / PACKAGE / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(archive.extractfile(member).read())
            if not (staging / PACKAGE / "test_modeling_common.py").exists():
                raise RuntimeError(f"{sdist.name} holds no tests/test_modeling_common.py")
            (staging / PACKAGE / "__init__.py").write_text("")
            for relative, text in STAND_INS.items():
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                (staging / relative).write_text(text)
            (staging / PACKAGE / ".complete").write_text(VERSION)
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)  # atomic: a half-extracted folder is never used
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def import_common(module: str):
    """``hf_common_tests.<module>``, or skip the calling test module with the reason it is unavailable."""
    import pytest

    try:
        prepare()
        return importlib.import_module(f"{PACKAGE}.{module}")
    except Exception as error:  # no network / no pip / another transformers layout: say so and skip
        pytest.skip(f"transformers {VERSION} common tests unavailable ({type(error).__name__}: {error})",
                    allow_module_level=True)


if __name__ == "__main__":
    try:
        print(f"transformers {VERSION} common tests in {prepare()}")
    except Exception as error:
        print(f"transformers {VERSION} common tests unavailable ({error}); their test modules will skip", file=sys.stderr)
