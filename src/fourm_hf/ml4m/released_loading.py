"""``FourMModel.from_pretrained`` of a released 4M checkpoint: converted on load, cached by repo and commit.

``FourMModel.from_pretrained("EPFL-VILAB/4M-21_XL")`` (or ``revision="<branch, tag or commit>"``):

1. downloads the released ``config.json``; its snapshot folder names the commit the revision resolves to;
2. looks for the converted model in the Hugging Face cache, under
   ``<HF_HUB_CACHE>/fourm_hf-converted/models--EPFL-VILAB--4M-21_XL/<commit>/`` (``cache_dir=`` moves it as
   it moves the Hub cache). Found: a plain ``save_pretrained`` folder, loaded as any other (safetensors);
3. otherwise downloads ``model.safetensors`` and converts it with the low-memory path of
   ``conversion.load_reference_model`` (the model is built on the meta device and filled one tensor at a
   time), writes the folder under a temporary name beside its final place and renames it into place.
   An interrupted conversion leaves no folder that a later load would take for a finished one.

A local folder in the released layout (``config.json`` without ``model_type`` but with ``domains_in``, and
``model.safetensors``) is converted in memory on every load: it has no repo and revision to key a cache by.

A repo that is neither in this package's format (``model_type`` ``"fourm"``) nor in the released layout is a
``ValueError`` naming it, as are a revision that does not exist and a failed download.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..modeling.modeling_fourm import CHECKPOINT_LOADERS
from ..tokenizers.lazy_released import HUB_OPTIONS, download_hub_file
from .catalogue import released_model
from .conversion import CONFIG_NAME, WEIGHTS_NAME, load_reference_model

CONVERTED_CACHE_FOLDER = "fourm_hf-converted"
SOURCE_FILE = "fourm_hf_source.json"  # written last into a converted folder: which repo and commit it came from


def is_released_config(config: dict) -> bool:
    """A reference FM ``config.json``: domains, no ``model_type``."""
    return "model_type" not in config and "domains_in" in config


def is_released_folder(path) -> bool:
    """A local folder holding a released checkpoint (reference ``config.json`` + ``model.safetensors``)."""
    folder = Path(path)
    config = folder / CONFIG_NAME
    if not (folder.is_dir() and config.is_file() and (folder / WEIGHTS_NAME).is_file()):
        return False
    try:
        return is_released_config(json.loads(config.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def released_repo_kind(name: str, hub_options: dict) -> str | None:
    """How ``name`` (a local path or a Hub repo id) loads: ``"folder"`` (a released folder), ``"repo"`` (a
    released Hub repo), None (this package's format: the standard ``from_pretrained``). Anything else is a
    ``ValueError``."""
    if os.path.isdir(name):
        return "folder" if is_released_folder(name) else None
    if released_model(name) is not None:
        return "repo"
    if name.count("/") != 1 or os.path.exists(name):
        return None  # not a repo id: transformers reports it
    config = json.loads(download_hub_file(name, CONFIG_NAME, hub_options).read_text(encoding="utf-8"))
    if config.get("model_type") == "fourm":
        return None
    if is_released_config(config):
        return "repo"
    raise ValueError(f"{name!r} is neither a fourm checkpoint (config.json with model_type 'fourm') nor a released 4M "
                     f"checkpoint (the reference's config.json with 'domains_in'; found model_type "
                     f"{config.get('model_type')!r}), and it is not in the released-model catalogue "
                     "(fourm_hf.ml4m.catalogue.released_models()).")


def converted_cache_folder(repo_id: str, commit: str, cache_dir=None) -> Path:
    """Where the converted model of ``repo_id`` at ``commit`` lives."""
    from huggingface_hub import constants

    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    return root / CONVERTED_CACHE_FOLDER / ("models--" + repo_id.replace("/", "--")) / commit


def converted_folder(repo_id: str, hub_options: dict | None = None) -> Path:
    """The converted ``save_pretrained`` folder of a released Hub repo at a revision, converting it once."""
    hub_options = dict(hub_options or {})
    config_path = download_hub_file(repo_id, CONFIG_NAME, hub_options)
    commit = config_path.parent.name  # huggingface_hub's snapshots/<commit>/ folder
    target = converted_cache_folder(repo_id, commit, hub_options.get("cache_dir"))
    if (target / SOURCE_FILE).is_file() and not hub_options.get("force_download"):
        return target
    weights_path = download_hub_file(repo_id, WEIGHTS_NAME, hub_options)
    write_converted_folder(weights_path, config_path, target, {"repo_id": repo_id, "commit": commit})
    return target


def write_converted_folder(weights_path: Path, config_path: Path, target: Path, source: dict) -> None:
    """Convert (low-memory path) and write ``target`` atomically: a temporary folder beside it, renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = load_reference_model(weights_path, config_path)
        model.save_pretrained(staging)
        del model
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2), encoding="utf-8")
        if target.exists():  # a stale or half-removed folder (force_download): replaced as a whole
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def load_released_checkpoint(model_class, name, kwargs: dict):
    """The ``CHECKPOINT_LOADERS`` entry of ``FourMModel.from_pretrained`` (None: not a released checkpoint)."""
    if not isinstance(name, (str, os.PathLike)):
        return None
    name = os.fspath(name)
    hub_options = {key: kwargs[key] for key in HUB_OPTIONS if key in kwargs}
    kind = released_repo_kind(name, hub_options)
    if kind is None:
        return None
    if kind == "repo":
        folder = converted_folder(name, hub_options)
        options = {key: value for key, value in kwargs.items() if key not in HUB_OPTIONS}
        return model_class.from_pretrained(str(folder), **options)
    unsupported = sorted(key for key, value in kwargs.items() if key not in ("dtype", "torch_dtype") and value is not None)
    if unsupported:
        raise ValueError(f"{name}: a released folder is converted in memory; from_pretrained options {unsupported} do "
                         "not apply to it (load it by repo id, or convert it with `fourm-hf convert-ml4m` first).")
    model = load_reference_model(Path(name) / WEIGHTS_NAME, Path(name) / CONFIG_NAME).eval()
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    return model.to(dtype) if dtype is not None and dtype != "auto" else model


if load_released_checkpoint not in CHECKPOINT_LOADERS:
    CHECKPOINT_LOADERS.append(load_released_checkpoint)


__all__ = ["converted_cache_folder", "converted_folder", "is_released_folder", "load_released_checkpoint",
           "released_repo_kind"]
