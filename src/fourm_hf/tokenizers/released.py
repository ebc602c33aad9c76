"""One entry point for every 4M tokenizer: :class:`FourMTokenizerModel`.

``FourMTokenizerModel.from_pretrained(folder)`` loads

* a **released** folder exactly as downloaded from ``EPFL-VILAB/4M_tokenizers_*`` (``config.json``
  written by the reference's hub mixin, without ``model_type``): the family is picked from the
  config's ``dec_type`` (the architecture marker), e.g. ``vit_b_dec`` -> :class:`FourMViTVQVAE`,
  ``BottleneckMLP/B_6-Wi_1024`` -> :class:`FourMMLPVQVAE`;
* a folder saved by ``save_pretrained`` of any tokenizer of this package (``model_type``
  ``fourm_vit_vqvae``, ``fourm_mlp_vqvae``, our FSQ ``fourm_vqvae``, ...), through ``AutoModel``.

Families register with :func:`register_released_family` (decoder-type prefix -> model class), which
also registers the class with ``AutoConfig`` / ``AutoModel``. The DiVAE family registers its
``unet_patched`` decoders the same way from its own module.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from transformers import AutoConfig, AutoModel, PreTrainedModel

from .mlp_vqvae import MLP_PRESET_PREFIX, FourMMLPVQVAE
from .released_layout import CONFIG_FILE, read_json_object, is_released_folder, read_released_config
from .vit_vqvae import FourMViTVQVAE
from .vqvae import FourMVQVAE

# decoder-type prefix of a released config.json -> the model class of that family
RELEASED_FAMILIES: dict[str, type[PreTrainedModel]] = {}
# model_type of our saved format -> model class (every tokenizer family, ours included)
TOKENIZER_MODEL_TYPES: dict[str, type[PreTrainedModel]] = {FourMVQVAE.config_class.model_type: FourMVQVAE}


def register_released_family(decoder_type_prefix: str, model_class: type[PreTrainedModel]) -> None:
    """Route released configs whose ``dec_type`` starts with ``decoder_type_prefix`` to ``model_class``
    (which must have ``from_released_folder``), and register it with ``AutoConfig`` / ``AutoModel``."""
    if not hasattr(model_class, "from_released_folder"):
        raise TypeError(f"register_released_family: {model_class.__name__} has no from_released_folder classmethod.")
    RELEASED_FAMILIES[decoder_type_prefix] = model_class
    config_class = model_class.config_class
    TOKENIZER_MODEL_TYPES[config_class.model_type] = model_class
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)


def released_family(released_config: dict) -> type[PreTrainedModel]:
    """The model class of a released ``config.json`` dict, from its ``dec_type`` (longest matching prefix)."""
    dec_type = released_config.get("dec_type")
    if not isinstance(dec_type, str):
        raise ValueError(
            f"Not a released 4M tokenizer: config.json has no 'dec_type' string (found keys {sorted(released_config)}); "
            f"expected a VQ-VAE / DiVAE config with dec_type starting with one of {sorted(RELEASED_FAMILIES)}."
        )
    matches = [prefix for prefix in RELEASED_FAMILIES if dec_type.startswith(prefix)]
    if not matches:
        raise ValueError(
            f"Unknown released tokenizer family: dec_type {dec_type!r} starts with none of {sorted(RELEASED_FAMILIES)}."
        )
    return RELEASED_FAMILIES[max(matches, key=len)]


class FourMTokenizerModel:
    """Loads any 4M tokenizer folder as the right ``PreTrainedModel`` (see the module docstring).

    Example::

        semseg = FourMTokenizerModel.from_pretrained("4M_tokenizers_semseg_4k_224-448")   # FourMViTVQVAE
        poses = FourMTokenizerModel.from_pretrained("4M_tokenizers_human-poses_1k_8")      # FourMMLPVQVAE

    Keyword arguments go to the family's loader: for released folders, config overrides such as
    ``encoder_num_heads=`` / ``decoder_num_heads=`` for preset names that do not give a head count.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("FourMTokenizerModel is a loader: use FourMTokenizerModel.from_pretrained(folder).")

    @staticmethod
    def family_of(folder: str | os.PathLike) -> type[PreTrainedModel]:
        """The model class that :meth:`from_pretrained` would build for ``folder``."""
        if is_released_folder(folder):
            return released_family(read_released_config(folder))
        path = os.path.join(os.fspath(folder), CONFIG_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"FourMTokenizerModel: {os.fspath(folder)!r} is not a folder with a {CONFIG_FILE}.")
        model_type = read_json_object(path).get("model_type")
        if model_type not in TOKENIZER_MODEL_TYPES:
            raise ValueError(
                f"FourMTokenizerModel: {os.fspath(folder)!r} holds a model of type {model_type!r}, not a 4M tokenizer "
                f"(expected one of {sorted(TOKENIZER_MODEL_TYPES)}, or a released folder whose config.json has no model_type)."
            )
        return TOKENIZER_MODEL_TYPES[model_type]

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **kwargs) -> PreTrainedModel:
        """The tokenizer in ``folder`` (released layout or our saved format), in eval mode.

        ``folder`` may also be a Hub repo id (``EPFL-VILAB/4M_tokenizers_semseg_4k_224-448``): its
        ``config.json`` and ``model.safetensors`` are fetched with ``huggingface_hub`` (or taken from
        its cache when offline).
        """
        folder = _local_folder(folder)
        family = cls.family_of(folder)
        if is_released_folder(folder):
            return family.from_released_folder(folder, **kwargs)
        return family.from_pretrained(folder, **kwargs).eval()


def _local_folder(path: str | os.PathLike) -> str:
    """``path`` itself when it is a local directory, else the snapshot of the Hub repo it names."""
    path = os.fspath(path)
    if os.path.isdir(path) or os.path.isabs(path) or path.count("/") != 1:
        return path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path, allow_patterns=[CONFIG_FILE, "model.safetensors"])
    except Exception as error:  # offline, unknown repo, no access: say what was looked for
        raise ValueError(f"FourMTokenizerModel: {path!r} is neither a local folder nor a reachable Hub repo ({error}).") from error


def convert_released_tokenizer(folder: str | os.PathLike, output_dir: str | os.PathLike, **kwargs) -> PreTrainedModel:
    """Load a released folder and save it in this package's format (``AutoModel``-loadable); the
    output folder is written under a temporary name and renamed into place."""
    model = FourMTokenizerModel.from_pretrained(folder, **kwargs)
    output_dir = os.path.abspath(os.fspath(output_dir))
    staging = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(output_dir))
    try:
        model.save_pretrained(staging)
        if os.path.isdir(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


register_released_family("vit_", FourMViTVQVAE)
register_released_family(MLP_PRESET_PREFIX, FourMMLPVQVAE)


__all__ = [
    "FourMTokenizerModel",
    "RELEASED_FAMILIES",
    "TOKENIZER_MODEL_TYPES",
    "convert_released_tokenizer",
    "register_released_family",
    "released_family",
]
