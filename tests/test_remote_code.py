"""The flat code a saved folder carries for ``trust_remote_code``: derived from the saved class's imports,
never from a hand-kept list, and the same when a folder is saved again from that flat code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fourm_hf import FourMForDepthEstimation, FourMImageProcessor, FourMModel
from fourm_hf.remote_code import class_module, flat_name, remote_code_closure
from fourm_hf.testing_utils import tiny_config

from conftest import subprocess_env


class UserModel(FourMModel):
    """A subclass defined outside the package: its code is its fourm_hf base class's."""


def saved_code(folder) -> list[str]:
    return sorted(path.name for path in folder.glob("*.py"))


def closure_names(module: str) -> list[str]:
    return sorted(flat_name(path) for path in remote_code_closure(module))


def test_class_module_finds_the_defining_module_or_the_nearest_package_base():
    assert class_module(FourMModel) == "modeling/modeling_fourm.py"
    assert class_module(FourMForDepthEstimation) == "modeling/modeling_fourm_heads.py"
    assert class_module(FourMImageProcessor) == "processing/image_processing_fourm.py"
    assert class_module(UserModel) == "modeling/modeling_fourm.py"
    with pytest.raises(ValueError, match="not a fourm_hf class"):
        class_module(dict)


def test_closure_is_dependency_ordered():
    closure = remote_code_closure("modeling/modeling_fourm_heads.py")
    assert closure[-1] == "modeling/modeling_fourm_heads.py"
    assert closure.index("modeling/modeling_fourm.py") < closure.index("modeling/modeling_fourm_heads.py")
    assert closure.index("configuration_fourm.py") < closure.index("modeling/modeling_fourm.py")
    assert closure.index("modalities.py") < closure.index("configuration_fourm.py")


def test_saved_model_and_head_carry_exactly_their_closure(tmp_path):
    config = tiny_config()
    FourMModel(config).save_pretrained(tmp_path / "model")
    assert saved_code(tmp_path / "model") == closure_names("modeling/modeling_fourm.py")
    FourMForDepthEstimation(tiny_config()).save_pretrained(tmp_path / "head")
    assert saved_code(tmp_path / "head") == closure_names("modeling/modeling_fourm_heads.py")
    assert "modeling_fourm_heads.py" in saved_code(tmp_path / "head")
    FourMImageProcessor(image_size=32).save_pretrained(tmp_path / "image_processor")
    assert saved_code(tmp_path / "image_processor") == closure_names("processing/image_processing_fourm.py")


def test_a_folder_saved_from_remote_code_carries_the_same_code(tmp_path):
    """Loaded with trust_remote_code where fourm_hf is not importable, then saved again: the flat code
    finds its own closure and the new folder loads the same way."""
    FourMModel(tiny_config()).save_pretrained(tmp_path / "first")
    code = (
        "import sys; sys.modules['fourm_hf'] = None  # make the package unimportable\n"
        "from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(tmp_path / 'first')!r}, trust_remote_code=True)\n"
        "assert 'transformers_modules' in type(m).__module__, type(m).__module__\n"
        f"m.save_pretrained({str(tmp_path / 'second')!r})\n"
        f"again = AutoModel.from_pretrained({str(tmp_path / 'second')!r}, trust_remote_code=True)\n"
        "print(type(again).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "FourMModel"
    assert saved_code(tmp_path / "second") == saved_code(tmp_path / "first")
