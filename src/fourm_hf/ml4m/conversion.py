"""Reference 4M checkpoints -> FourMModel, with one copy of the weights in memory.

The reference implementation (package ``fourm``; released checkpoints such as
``EPFL-VILAB/4M-7_B_CC12M``, ``EPFL-VILAB/4M-21_XL``, ``EPFL-VILAB/4M-7-SR_L_CC12M``) stores a flat
``config.json`` (``domains_in``, ``dim``, ...) and a safetensors ``state_dict`` whose keys name
domains with their resolution (``tok_rgb@224``). The config carries no vocabulary sizes: they are
read from the weights' shapes. Converting:

* renames each domain to its registered modality (``tok_rgb@224`` -> ``tok_rgb`` at a 224 px model,
  ``tok_rgb@448`` stays ``tok_rgb@448``; see ``reference_names.py``);
* drops what FourMModel computes instead of storing: the sin-cos position buffers and the all-zero
  LayerNorm bias buffers (both are checked, so a checkpoint that differs is refused); learned
  position tables (the global-embedding tokens of 4M-21) are kept;
* drops the decoder copies of shared modality embeddings (checked equal), or, where the reference's
  ``save_pretrained`` kept only the decoder name of a shared tensor (SR), files it under the encoder;
* drops the decoder token tables of image modalities, never read when outputs are untied, and the
  decoder side of input-only domains (4M-21 lists ``t5_caption`` among its outputs; it has no decoder).

The model is built on the meta device and each tensor is read from the file (``safe_open``),
converted and put in place one at a time, so memory holds one copy of the weights.

Command line (``fourm_hf.commands.convert_ml4m``):
``fourm-hf convert-ml4m --checkpoint DIR_OR_FILE [--config X.json] --output DIR`` or
``fourm-hf convert-ml4m --repo-id EPFL-VILAB/4M-21_XL --output DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..output_paths import check_output_dir, staging_dir
from ..configuration_fourm import FourMConfig
from ..modalities import ModalitySpec
from ..modeling.embeddings import ModalityEmbedding, position_table
from ..modeling.modeling_fourm import FourMModel
from .reference_batch import reference_batch_to_packed  # noqa: F401  (public from here too)
from .reference_names import modality_spec_for_domain, reference_domain_to_modality

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"

UNSUPPORTED_REFERENCE_SETTINGS = {
    # field: the only value FourMModel implements
    "gated_mlp": True,
    "qkv_bias": False,
    "proj_bias": False,
    "mlp_bias": False,
    "norm_bias": False,
    "qk_norm": False,
    "decoder_causal_mask": False,
    "decoder_sep_mask": True,
    "num_register_tokens": 0,
}


class ReferenceWeights:
    """The tensors of a reference checkpoint, read one at a time: a safetensors file or an in-memory dict."""

    def __init__(self, source: str | os.PathLike | dict[str, torch.Tensor]):
        self.name = "state_dict" if isinstance(source, dict) else str(source)
        if isinstance(source, dict):
            self._tensors, self._file = source, None
            return
        if not Path(source).is_file():
            raise ValueError(f"Checkpoint file {source} does not exist.")
        try:
            self._file = safe_open(str(source), framework="pt", device="cpu")
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{source} is not a readable safetensors file (truncated or corrupt?): {error}"
            ) from None
        self._tensors = None

    def keys(self) -> list[str]:
        return list(self._tensors if self._file is None else self._file.keys())

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        if self._file is None:
            return tuple(self._tensors[key].shape)
        return tuple(self._file.get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        if self._file is None:
            return self._tensors[key]
        try:
            return self._file.get_tensor(key)
        except SafetensorError as error:
            raise ValueError(f"Cannot read tensor {key!r} from {self.name} (truncated or corrupt?): {error}") from None


# ---- config ------------------------------------------------------------------------------------------
def config_from_reference(reference_config: dict, weights: ReferenceWeights | dict[str, torch.Tensor]) -> FourMConfig:
    """Build a FourMConfig from a reference ``config.json`` dict; vocabulary sizes come from the weights."""
    weights = weights if isinstance(weights, ReferenceWeights) else ReferenceWeights(weights)
    _check_reference_settings(reference_config)
    domains_in, domains_out = list(reference_config["domains_in"]), list(reference_config["domains_out"])
    image_size = int(reference_config.get("image_size", 224))
    specs = {}
    for domain in dict.fromkeys(domains_in + domains_out):
        spec = modality_spec_for_domain(domain, image_size)
        vocab_size = _vocab_size_from_weights(weights, domain)
        if vocab_size is not None:
            spec = spec.replace(vocab_size=vocab_size)
        specs[spec.name] = spec.to_dict()
    decoded = [d for d in domains_out if not _spec(specs, d, image_size).is_continuous]
    dim = int(reference_config["dim"])
    return FourMConfig(
        hidden_size=dim,
        num_encoder_layers=int(reference_config["encoder_depth"]),
        num_decoder_layers=int(reference_config["decoder_depth"]),
        num_attention_heads=int(reference_config["num_heads"]),
        mlp_ratio=float(reference_config.get("mlp_ratio", 4.0)),
        image_size=image_size,
        patch_size=int(reference_config.get("patch_size", 16)),
        input_modalities=[reference_domain_to_modality(d, image_size) for d in domains_in],
        output_modalities=[reference_domain_to_modality(d, image_size) for d in decoded],
        modality_specs=specs,
        share_modality_embeddings=bool(reference_config.get("share_modality_embeddings", True)),
        tie_output_embeddings=_outputs_are_tied(decoded, weights),
        # converted checkpoints decode with the reference demo's per-modality recipes in the pipeline
        generation_preset="ml4m_demo",
    )


def _check_reference_settings(reference_config: dict) -> None:
    for field, supported in UNSUPPORTED_REFERENCE_SETTINGS.items():
        if field in reference_config and reference_config[field] != supported:
            raise ValueError(
                f"Reference config has {field}={reference_config[field]!r}; FourMModel implements only {supported!r}."
            )
    if str(reference_config.get("act_layer", "SiLU")).lower() not in ("silu", "swish"):
        raise ValueError(f"Reference config has act_layer={reference_config['act_layer']!r}; only SiLU is implemented.")
    for field in ("domains_in", "domains_out", "dim", "encoder_depth", "decoder_depth", "num_heads"):
        if field not in reference_config:
            raise ValueError(f"Reference config lacks {field!r}; expected the released FM config.json layout.")


def _spec(specs: dict, domain: str, image_size: int) -> ModalitySpec:
    return ModalitySpec.from_dict(specs[reference_domain_to_modality(domain, image_size)])


def _vocab_size_from_weights(weights: ReferenceWeights, domain: str) -> int | None:
    for key in (f"encoder_embeddings.{domain}.token_emb.weight", f"decoder_embeddings.{domain}.to_logits.weight",
                f"decoder_embeddings.{domain}.token_emb.weight"):
        if key in weights:
            return int(weights.shape(key)[0])
    return None


def _outputs_are_tied(domains_out: list[str], weights: ReferenceWeights) -> bool:
    """True when every decoder output projection equals its token table (the training script's tying)."""
    for domain in domains_out:
        head, table = f"decoder_embeddings.{domain}.to_logits.weight", f"decoder_embeddings.{domain}.token_emb.weight"
        if head not in weights or table not in weights or weights.shape(head) != weights.shape(table):
            return False
        if not torch.equal(weights.get(head), weights.get(table)):
            return False
    return bool(domains_out)


# ---- tensors -------------------------------------------------------------------------------------------
def _require_equal(key: str, value: torch.Tensor, expected: torch.Tensor) -> None:
    """Refuse to drop a checkpoint tensor unless it equals what FourMModel computes in its place."""
    if value.dim() == 3 and expected.dim() == 2:  # (1, N, D) position buffer vs our (n, D) table
        value = value[0, : expected.shape[0]]
    if value.shape != expected.shape or not torch.allclose(value.float(), expected.float(), atol=1e-5):
        raise ValueError(f"Checkpoint tensor {key!r} differs from what FourMModel computes for it; cannot convert.")


def convert_reference_tensor(
    key: str, weights: ReferenceWeights, config: FourMConfig
) -> tuple[str | None, torch.Tensor | None]:
    """One reference tensor -> (FourMModel key, tensor), or (None, None) when it is dropped (module docstring)."""
    parts = key.split(".")
    side = parts[0]
    if side in ("encoder_embeddings", "decoder_embeddings"):
        parts[1] = reference_domain_to_modality(parts[1], config.image_size)
        if parts[1] not in config.modality_specs:
            return key, weights.get(key)  # reported as unexpected by the caller
        spec = config.modality(parts[1])
        if side == "decoder_embeddings" and parts[1] not in config.output_modalities and spec.is_continuous:
            return None, None  # an input-only domain listed among the outputs
    new_key = ".".join(parts)
    if parts[-1] == "pos_emb":
        value = weights.get(key)
        if spec.learned_positions:
            return new_key, value.reshape(-1, value.shape[-1])
        _require_equal(key, value, position_table(config, spec))
        return None, None
    if parts[-1] == "bias" and "norm" in parts[-2]:
        _require_equal(key, weights.get(key), torch.zeros(weights.shape(key)))
        return None, None
    if side == "decoder_embeddings":
        name = parts[1]
        shared = config.share_modality_embeddings and name in config.input_modalities
        if parts[2] == "mod_emb" and shared:
            encoder_key = _encoder_key_of(key, weights)
            if encoder_key is None:  # the reference saved the shared tensor under its decoder name only
                return f"encoder_embeddings.{name}.mod_emb", weights.get(key)
            _require_equal(key, weights.get(key), weights.get(encoder_key))
            return None, None
        if parts[2] == "token_emb" and not config.tie_output_embeddings and not spec.is_sequence:
            return None, None  # never read: image targets enter the decoder as the mask token
        if parts[2] == "to_logits" and config.tie_output_embeddings:
            return None, None  # the token table is the output projection
    return new_key, weights.get(key)


def _encoder_key_of(decoder_key: str, weights: ReferenceWeights) -> str | None:
    encoder_key = "encoder_embeddings." + decoder_key.split(".", 1)[1]
    return encoder_key if encoder_key in weights else None


def convert_reference_state_dict(state_dict: dict[str, torch.Tensor], config: FourMConfig) -> dict[str, torch.Tensor]:
    """Map a whole in-memory reference state dict to FourMModel keys (see the module docstring)."""
    weights = ReferenceWeights(state_dict)
    converted = {}
    for key in weights.keys():
        new_key, value = convert_reference_tensor(key, weights, config)
        if new_key is not None:
            converted[new_key] = value
    return converted


# ---- loading -------------------------------------------------------------------------------------------
def read_reference_config(reference_config: dict | str | os.PathLike) -> dict:
    """A reference FM config from a dict or a JSON file (a fixture JSON's ``fm_config`` is unwrapped)."""
    if not isinstance(reference_config, dict):
        path = Path(reference_config)
        if not path.is_file():
            raise ValueError(f"Reference config {path} does not exist.")
        try:
            reference_config = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"Reference config {path} is not valid JSON: {error}") from None
    return reference_config.get("fm_config", reference_config)


def load_reference_model(
    checkpoint: str | os.PathLike | dict[str, torch.Tensor], reference_config: dict | str | os.PathLike
) -> FourMModel:
    """Load a reference checkpoint (safetensors file or state dict) and its config as a FourMModel.

    The model is created on the meta device; every tensor is read, converted and assigned in turn.
    """
    weights = ReferenceWeights(checkpoint)
    config = config_from_reference(read_reference_config(reference_config), weights)
    with torch.device("meta"):
        model = FourMModel(config)
    slots = dict(model.named_parameters())
    loaded, unexpected = set(), []
    for key in weights.keys():
        new_key, value = convert_reference_tensor(key, weights, config)
        if new_key is None:
            continue
        if new_key not in slots:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(slots[new_key].shape):
            raise ValueError(
                f"Checkpoint tensor {key!r} has shape {tuple(value.shape)} but the config implies "
                f"{tuple(slots[new_key].shape)} for {new_key!r}; the config.json does not belong to these weights."
            )
        _assign_parameter(model, new_key, value)
        loaded.add(new_key)
    missing = sorted(set(slots) - loaded)
    if missing or unexpected:
        raise ValueError(f"Checkpoint does not match FourMModel: missing keys {missing}, unexpected keys {unexpected}.")
    _materialize_position_tables(model)
    return model


def _assign_parameter(model: nn.Module, key: str, value: torch.Tensor) -> None:
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[name] = nn.Parameter(value.contiguous(), requires_grad=True)


def _materialize_position_tables(model: FourMModel) -> None:
    """Compute the sin-cos buffers (left on the meta device by the meta-device construction)."""
    for module in model.modules():
        if isinstance(module, ModalityEmbedding) and not module.spec.learned_positions:
            module.pos_emb = position_table(model.config, module.spec).to(torch.get_default_dtype())
    left = [name for name, tensor in list(model.named_parameters()) + list(model.named_buffers()) if tensor.is_meta]
    if left:
        raise ValueError(f"Conversion left tensors without values: {left}.")


def convert_ml4m_checkpoint(checkpoint, reference_config, output_dir) -> FourMModel:
    """Convert and ``save_pretrained`` into ``output_dir`` atomically (temporary folder, then rename).

    Nothing is written before the whole checkpoint has converted; a failure leaves no output folder.
    """
    output_dir = check_output_dir(output_dir, "convert-ml4m: --out")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(f"Output folder {output_dir} exists and is not empty; choose a new folder.")
    model = load_reference_model(checkpoint, reference_config)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(output_dir, hidden=True)  # removes what a killed earlier run left
    try:
        model.save_pretrained(staging)
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return model


def resolve_reference_files(
    checkpoint: str | None = None, config: str | None = None, repo_id: str | None = None, revision: str | None = None
) -> tuple[Path, Path]:
    """(weights, config) paths from a released-layout folder or file, or downloaded from a Hub repo.

    A released repo (``EPFL-VILAB/4M-21_XL``) holds ``config.json`` and ``model.safetensors``;
    ``huggingface-cli download REPO --local-dir DIR`` gives the same folder.
    """
    if (checkpoint is None) == (repo_id is None):
        raise ValueError("Give exactly one of a checkpoint (file or folder) and a Hub repo id.")
    if repo_id is not None:
        config_path = Path(config) if config else _download(repo_id, CONFIG_NAME, revision)
        return _download(repo_id, WEIGHTS_NAME, revision), config_path
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        weights, beside = checkpoint / WEIGHTS_NAME, checkpoint / CONFIG_NAME
    else:
        weights, beside = checkpoint, checkpoint.parent / CONFIG_NAME
    config_path = Path(config) if config else beside
    for path, what in ((weights, "weights"), (config_path, "config")):
        if not path.is_file():
            raise ValueError(f"Reference {what} file {path} does not exist.")
    return weights, config_path


def _download(repo_id: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except (HfHubHTTPError, OSError) as error:
        raise ValueError(f"Cannot download {filename} from the Hub repo {repo_id!r}: {error}") from None
