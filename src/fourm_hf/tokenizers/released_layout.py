"""The released 4M tokenizer layout: a Hub folder written by the reference's ``PyTorchModelHubMixin``.

Such a folder holds ``config.json`` (the reference constructor's keyword arguments, *no*
``model_type``) and ``model.safetensors`` (the reference's parameter names). This file has what
every tokenizer family needs to load one as is:

* :class:`ReleasedTokenizerConfig` - the constructor keys every released VQ-VAE / DiVAE config
  shares (``enc_type``, ``dec_type``, ``image_size``, ``quant_type``, ...), with their reference
  defaults; the family configs add their own keys and resolved sizes.
* :func:`read_released_folder` - ``(config dict, state dict)`` of a folder, with clear errors.
* :func:`check_released_keys` - reject keys a family does not know.
* :func:`build_from_state_dict` - construct a model on the meta device and load the weights
  strictly (missing / unexpected / mis-shaped tensors are a ``ValueError`` naming them), so the
  weights are held once.
* :func:`is_released_folder` - ``config.json`` without ``model_type``.
* :func:`save_in_released_layout` - the inverse: write a model of this package as a released folder.
* :class:`ReleasedTokenizerPreTrainedModel` - the base of every family: ``from_pretrained`` takes a
  released folder as well as our own saved format.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init

from .quantizers import LucidQuantizer
from .vit_blocks import ViTDecoder, ViTEncoder, sincos_position_table

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class ReleasedTokenizerConfig(PreTrainedConfig):
    r"""Keys shared by the reference's ``VQVAE`` / ``DiVAE`` configs (``config.json`` of a released
    tokenizer). Names and defaults are the reference's; see the fixture README section 10.

    Args:
        enc_type / dec_type: encoder / decoder preset names (``vit_b_enc``, ``BottleneckMLP/B_6-Wi_1024``, ...).
        image_size: image size the position tables were built for (448 for the 224-448 tokenizers);
            ``image_size_enc`` / ``image_size_dec`` override it per side.
        patch_size: token patch size (``patch_size_dec`` overrides it for the decoder).
        n_channels: input channels (or the class-embedding width when ``n_labels`` is set).
        n_labels: number of segmentation classes (semseg: class-id input, logits output).
        patch_proj: patch convolution (``True``) or a 1x1 projection of a feature grid (``False``).
        post_mlp: the ViT tanh post-MLP.
        quant_type: ``"lucid"`` (EMA cosine codebook) or ``"memcodes"``.
        codebook_size / num_codebooks / latent_dim: vocabulary, heads (memcodes), code width.
        norm_codes / norm_latents / sync_codebook / undo_std: reference quantizer / input flags.
        modality: the 4M modality the tokenizer serves (``"tok_semseg"``, ...), optional.
    """

    enc_type: str = "vit_b_enc"
    dec_type: str = "vit_b_dec"
    image_size: int = 224
    image_size_enc: int | None = None
    image_size_dec: int | None = None
    patch_size: int = 16
    patch_size_dec: int | None = None
    n_channels: int = 3
    n_labels: int | None = None
    patch_proj: bool = True
    post_mlp: bool = True
    quant_type: str = "lucid"
    codebook_size: int = 16384
    num_codebooks: int = 1
    latent_dim: int = 32
    norm_codes: bool = True
    norm_latents: bool = False
    sync_codebook: bool = False
    undo_std: bool = False
    modality: str | None = None

    # the keys of this family's released config.json (set by each family config)
    released_keys = frozenset()

    def to_released_dict(self) -> dict[str, Any]:
        """The released ``config.json`` content for this configuration (``released_keys`` only)."""
        return {key: getattr(self, key) for key in sorted(self.released_keys)}

    @property
    def vocab_size(self) -> int:
        """Number of code ids per token."""
        return self.codebook_size

    def check_flags(self, supported_quant_types: tuple[str, ...]) -> None:
        """Raise ``ValueError`` for reference flag values this package does not implement."""
        name = type(self).__name__
        if self.quant_type not in supported_quant_types:
            raise ValueError(f"{name}: quant_type must be one of {supported_quant_types}, got {self.quant_type!r}.")
        if self.quant_type == "lucid" and self.norm_codes is not True:
            raise ValueError(
                f"{name}: the lucid codebook is implemented with norm_codes=True (cosine similarity, as every "
                f"released tokenizer), got norm_codes={self.norm_codes!r}."
            )
        if self.norm_latents:
            raise ValueError(f"{name}: norm_latents=True is not supported (released tokenizers use False).")
        if self.undo_std:
            raise ValueError(f"{name}: undo_std=True is not supported (released tokenizers use False).")
        for key in ("image_size", "patch_size", "n_channels", "codebook_size", "num_codebooks", "latent_dim"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}.")
        if self.n_labels is not None and (not isinstance(self.n_labels, int) or self.n_labels < 2):
            raise ValueError(f"{name}: n_labels must be None or an integer >= 2, got {self.n_labels!r}.")


def is_released_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is a local directory whose ``config.json`` has no ``model_type``."""
    path = os.path.join(os.fspath(folder), CONFIG_FILE)
    if not os.path.isfile(path):
        return False
    try:
        config = read_json_object(path)
    except ValueError:
        return False
    return "model_type" not in config


def read_released_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` dict of a released folder (``ValueError`` when absent or not a JSON object)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"Released tokenizer: {folder!r} is not a local directory (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE}).")
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"Released tokenizer: no {CONFIG_FILE} in {folder!r} (found {sorted(os.listdir(folder))}).")
    return read_json_object(path)


def read_released_folder(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config dict, state dict)`` of a released tokenizer folder (``model.safetensors`` only)."""
    config = read_released_config(folder)
    weights = os.path.join(os.fspath(folder), WEIGHTS_FILE)
    if not os.path.isfile(weights):
        found = sorted(os.listdir(folder))
        raise ValueError(
            f"Released tokenizer: no {WEIGHTS_FILE} in {os.fspath(folder)!r} (found {found}); only safetensors weights are loaded."
        )
    return config, load_file(weights)


def check_released_keys(config: dict[str, Any], known_keys: set[str], family: str) -> None:
    """``ValueError`` naming the keys of ``config`` that ``family`` does not know."""
    unknown = sorted(set(config) - known_keys)
    if unknown:
        raise ValueError(
            f"{family}: config.json has keys this tokenizer family does not know: {unknown} "
            f"(expected a subset of {sorted(known_keys)})."
        )


def count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of ``<prefix>.<i>.`` entries (i = 0, 1, ...) in a state dict."""
    indices = {int(key[len(prefix) + 1 :].split(".", 1)[0]) for key in state_dict if key.startswith(prefix + ".")}
    if indices != set(range(len(indices))):
        raise ValueError(f"Released tokenizer: weights {prefix}.<i> are not numbered 0..n-1 (found {sorted(indices)}).")
    return len(indices)


def require_weight(state_dict: dict[str, torch.Tensor], key: str, family: str) -> torch.Tensor:
    """``state_dict[key]`` or a ``ValueError`` saying the weight is missing."""
    if key not in state_dict:
        raise ValueError(f"{family}: weight {key!r} is missing from {WEIGHTS_FILE}.")
    return state_dict[key]


def build_from_state_dict(model_class, config, state_dict: dict[str, torch.Tensor]):
    """Construct ``model_class(config)`` without initialising it and load ``state_dict`` strictly.

    Missing, unexpected or mis-shaped tensors raise a ``ValueError`` that names them.
    """
    with torch.device("meta"):
        model = model_class(config)
    expected = model.state_dict()
    family = model_class.__name__
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        raise ValueError(f"{family}: weights missing from {WEIGHTS_FILE}: {missing[:10]}{' ...' if len(missing) > 10 else ''}.")
    if unexpected:
        raise ValueError(
            f"{family}: {WEIGHTS_FILE} has weights this configuration does not use: {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''} (does config.json match the weights?)."
        )
    for key, tensor in expected.items():
        if tuple(tensor.shape) != tuple(state_dict[key].shape):
            raise ValueError(
                f"{family}: weight {key!r} has shape {tuple(state_dict[key].shape)}, the configuration "
                f"expects {tuple(tensor.shape)}."
            )
    floats = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    model.load_state_dict(floats, strict=True, assign=True)
    return model.eval()


class ReleasedTokenizerPreTrainedModel(PreTrainedModel):
    """Base of the released tokenizer families: loads a released Hub folder as it is, or our own format.

    A family's ``config_class`` provides ``from_released(released_config, state_dict, **overrides)``;
    a family that shares its config keys with another overrides :meth:`check_released_family`.
    """

    @torch.no_grad()
    def _init_weights(self, module):
        """The layers every family shares; a family adds its own in an override that calls this first."""
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (ViTEncoder, ViTDecoder)):
            init.copy_(module.pos_emb, sincos_position_table(module.dim, module.table_grid))
        elif isinstance(module, LucidQuantizer):
            init.normal_(module._codebook.embed)
            init.zeros_(module._codebook.cluster_size)
            init.ones_(module._codebook.initted)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """A released Hub folder (``config.json`` without ``model_type``) or our own saved format."""
        if is_released_folder(pretrained_model_name_or_path):
            return cls.from_released_folder(pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_released_folder(cls, folder: str | os.PathLike, **overrides):
        """Load a folder exactly as downloaded from ``EPFL-VILAB/4M_tokenizers_*`` (config overrides as kwargs)."""
        released, state_dict = read_released_folder(folder)
        cls.check_released_family(folder, released)
        config = cls.config_class.from_released(released, state_dict, **overrides)
        return build_from_state_dict(cls, config, state_dict)

    @classmethod
    def check_released_family(cls, folder: str | os.PathLike, released: dict[str, Any]) -> None:
        """Raise a ``ValueError`` when ``released`` (a folder's config) is not of this family; default: accept."""


def save_in_released_layout(model, folder: str | os.PathLike) -> None:
    """Write ``model`` as a released Hub folder (``config.json`` without ``model_type`` +
    ``model.safetensors`` with the reference's names), e.g. to hand it back to the reference code.
    Both files are written under temporary names and renamed into place."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    config_path, weights_path = os.path.join(folder, CONFIG_FILE), os.path.join(folder, WEIGHTS_FILE)
    state_dict = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(state_dict, weights_path + ".tmp")
    os.replace(weights_path + ".tmp", weights_path)
    with open(config_path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(model.config.to_released_dict(), handle, indent=2, sort_keys=True)
    os.replace(config_path + ".tmp", config_path)


def read_json_object(path: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``ValueError`` when it is not valid JSON or not an object)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"Released tokenizer: {path!r} is not valid JSON ({error}).") from error
    if not isinstance(data, dict):
        raise ValueError(f"Released tokenizer: {path!r} must hold a JSON object, got {type(data).__name__}.")
    return data


__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "ReleasedTokenizerConfig",
    "build_from_state_dict",
    "check_released_keys",
    "count_blocks",
    "is_released_folder",
    "read_json_object",
    "read_released_config",
    "read_released_folder",
    "require_weight",
    "save_in_released_layout",
]
