"""Reference 4M checkpoints -> FourMModel, and reference-format batches -> packed batches.

The reference implementation (package ``fourm``; released checkpoints such as
``EPFL-VILAB/4M-7_B_CC12M``) stores a flat ``config.json`` (``domains_in``, ``dim``, ...) and a
safetensors ``state_dict`` whose keys name modalities with their resolution (``tok_rgb@224``).
Converting:

* renames ``<domain>@<res>`` to the registered modality name (``tok_rgb``);
* drops what FourMModel computes instead of storing: the sin-cos position buffers and the all-zero
  LayerNorm bias buffers (both are checked, so a checkpoint that differs is refused);
* drops the decoder copies of shared modality embeddings (checked equal) and the decoder token
  tables of image modalities, which the reference never reads when outputs are untied.

Command line: ``fourm-hf convert-ml4m --checkpoint X.safetensors --config X.json --output DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..configuration_fourm import FourMConfig
from ..modalities import get_modality
from .embeddings import position_table
from .modeling_fourm import FourMModel

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


def reference_domain_to_modality(domain: str) -> str:
    """``"tok_rgb@224"`` -> ``"tok_rgb"``; ``"caption"`` -> ``"caption"``."""
    return re.sub(r"@\d+$", "", domain)


def _reference_resolution(domains: list[str]) -> int | None:
    sizes = {int(domain.split("@")[1]) for domain in domains if "@" in domain}
    if len(sizes) > 1:
        raise ValueError(f"Reference domains use several resolutions {sorted(sizes)}; only one is supported.")
    return sizes.pop() if sizes else None


def config_from_reference(reference_config: dict, state_dict: dict[str, torch.Tensor]) -> FourMConfig:
    """Build a FourMConfig from a reference ``config.json`` dict; vocab sizes come from the weights."""
    for field, supported in UNSUPPORTED_REFERENCE_SETTINGS.items():
        if field in reference_config and reference_config[field] != supported:
            raise ValueError(
                f"Reference config has {field}={reference_config[field]!r}; FourMModel implements only {supported!r}."
            )
    if str(reference_config.get("act_layer", "SiLU")).lower() not in ("silu", "swish"):
        raise ValueError(f"Reference config has act_layer={reference_config['act_layer']!r}; only SiLU is implemented.")
    domains_in, domains_out = list(reference_config["domains_in"]), list(reference_config["domains_out"])
    image_size = int(reference_config.get("image_size", 224))
    resolution = _reference_resolution(domains_in + domains_out)
    if resolution is not None and resolution != image_size:
        raise ValueError(f"Reference domains are at {resolution}px but image_size is {image_size}.")
    specs = {}
    for domain in dict.fromkeys(domains_in + domains_out):
        name = reference_domain_to_modality(domain)
        try:
            spec = get_modality(name)
        except ValueError as error:
            raise ValueError(f"Reference domain {domain!r}: register a ModalitySpec named {name!r} first. {error}") from None
        table = state_dict.get(f"encoder_embeddings.{domain}.token_emb.weight")
        if table is None:
            table = state_dict.get(f"decoder_embeddings.{domain}.to_logits.weight")
        if table is not None:
            spec = spec.replace(vocab_size=int(table.shape[0]))
        specs[name] = spec.to_dict()
    dim = int(reference_config["dim"])
    return FourMConfig(
        hidden_size=dim,
        num_encoder_layers=int(reference_config["encoder_depth"]),
        num_decoder_layers=int(reference_config["decoder_depth"]),
        num_attention_heads=int(reference_config["num_heads"]),
        mlp_ratio=float(reference_config.get("mlp_ratio", 4.0)),
        image_size=image_size,
        patch_size=int(reference_config.get("patch_size", 16)),
        input_modalities=[reference_domain_to_modality(d) for d in domains_in],
        output_modalities=[reference_domain_to_modality(d) for d in domains_out],
        modality_specs=specs,
        share_modality_embeddings=bool(reference_config.get("share_modality_embeddings", True)),
        tie_output_embeddings=_outputs_are_tied(domains_out, state_dict),
    )


def _outputs_are_tied(domains_out: list[str], state_dict: dict[str, torch.Tensor]) -> bool:
    """True when every decoder output projection equals its token table (the training script's tying)."""
    pairs = [
        (state_dict.get(f"decoder_embeddings.{d}.to_logits.weight"), state_dict.get(f"decoder_embeddings.{d}.token_emb.weight"))
        for d in domains_out
    ]
    return all(head is not None and table is not None and torch.equal(head, table) for head, table in pairs)


def _require_equal(key: str, value: torch.Tensor, expected: torch.Tensor) -> None:
    """Refuse to drop a checkpoint tensor unless it equals what FourMModel computes in its place."""
    if value.dim() == 3 and expected.dim() == 2:  # (1, N, D) position buffer vs our (n, D) table
        value = value[0, : expected.shape[0]]
    if value.shape != expected.shape or not torch.allclose(value.float(), expected.float(), atol=1e-5):
        raise ValueError(f"Checkpoint tensor {key!r} differs from what FourMModel computes for it; cannot convert.")


def convert_reference_state_dict(state_dict: dict[str, torch.Tensor], config: FourMConfig) -> dict[str, torch.Tensor]:
    """Map reference keys to FourMModel keys (see the module docstring for what is dropped)."""
    converted = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] in ("encoder_embeddings", "decoder_embeddings"):
            parts[1] = reference_domain_to_modality(parts[1])
        new_key = ".".join(parts)
        if parts[-1] == "pos_emb":
            _require_equal(key, value, position_table(config, config.modality(parts[1])))
            continue
        if parts[-1] == "bias" and ("norm" in parts[-2]):
            _require_equal(key, value, torch.zeros_like(value))
            continue
        if parts[0] == "decoder_embeddings":
            name = parts[1]
            if parts[2] == "mod_emb" and config.share_modality_embeddings:
                _require_equal(key, value, state_dict_value(state_dict, "encoder_embeddings", name, "mod_emb"))
                continue
            if parts[2] == "token_emb" and not config.tie_output_embeddings and not config.modality(name).is_sequence:
                continue  # never read: image targets enter the decoder as the mask token
            if parts[2] == "to_logits" and config.tie_output_embeddings:
                continue  # the token table is the output projection
        converted[new_key] = value
    return converted


def state_dict_value(state_dict: dict[str, torch.Tensor], prefix: str, modality: str, suffix: str) -> torch.Tensor:
    """The reference tensor ``<prefix>.<domain>.<suffix>`` whose domain maps to ``modality``."""
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == prefix and reference_domain_to_modality(parts[1]) == modality and ".".join(parts[2:]) == suffix:
            return value
    raise KeyError(f"{prefix}.{modality}.{suffix}")


def load_reference_model(checkpoint: str | os.PathLike, reference_config: dict | str | os.PathLike) -> FourMModel:
    """Load a reference checkpoint (safetensors) and its config (dict or JSON path) as a FourMModel."""
    state_dict = load_file(str(checkpoint))
    if not isinstance(reference_config, dict):
        reference_config = json.loads(Path(reference_config).read_text())
    reference_config = reference_config.get("fm_config", reference_config)
    config = config_from_reference(reference_config, state_dict)
    model = FourMModel(config)
    converted = convert_reference_state_dict(state_dict, config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"Checkpoint does not match FourMModel: missing keys {missing}, unexpected keys {unexpected}.")
    return model


def convert_ml4m_checkpoint(checkpoint, reference_config, output_dir) -> FourMModel:
    """Convert and ``save_pretrained`` into ``output_dir`` atomically (temporary folder, then rename)."""
    model = load_reference_model(checkpoint, reference_config)
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"Output folder {output_dir} exists and is not empty; choose a new folder.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return model


# ---- reference-format batches --------------------------------------------------------------------------
def _stable_partition(valid: torch.Tensor, budget: int) -> torch.Tensor:
    """(B, N) bool -> (B, budget) indices: the valid entries first, then the rest, each in order."""
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    return order[:, :budget]


def reference_batch_to_packed(
    batch: dict[str, dict[str, torch.Tensor]],
    config: FourMConfig,
    num_encoder_tokens: int,
    num_decoder_tokens: int,
    decoder_order: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Turn a batch in the reference's per-modality format into FourMModel's packed format.

    ``batch[domain]`` holds ``tensor`` ((B, N) ids or (B, C, H, W) pixels), ``input_mask`` and
    ``target_mask`` ((B, N) bool, True = NOT an input / NOT a target), keyed by reference domain
    names (``tok_rgb@224``) or modality names. Token selection follows the reference exactly: the
    encoder concatenates domains in sorted order and keeps the first ``num_encoder_tokens`` of a
    stable visible-first partition; the decoder does the same over ``decoder_order`` (default:
    sorted), a sequence domain of N slots contributing N - 1 next-token targets.

    Returns the packed tensors plus ``encoder_gather_index`` / ``decoder_gather_index`` (B, budget):
    each kept slot's index in the respective concatenation.
    """
    domains = {reference_domain_to_modality(d): d for d in batch}
    encoder_parts = [_encoder_slots(config, name, batch[domains[name]]) for name in sorted(domains, key=lambda n: domains[n])
                     if name in config.input_modalities]
    ids, modality_ids, positions, valid = (torch.cat(column, dim=1) for column in zip(*encoder_parts))
    gather = _stable_partition(valid, num_encoder_tokens)
    packed = {
        "input_ids": torch.gather(ids, 1, gather),
        "input_modality_ids": torch.gather(modality_ids, 1, gather),
        "input_positions": torch.gather(positions, 1, gather),
        "attention_mask": torch.gather(valid, 1, gather).long(),
        "encoder_gather_index": gather,
    }
    pixel_domains = [domains[n] for n in domains if n in config.input_modalities and config.modality(n).kind == "pixels"]
    if pixel_domains:
        packed["pixel_values"] = batch[pixel_domains[0]]["tensor"].float()
    order = [reference_domain_to_modality(d) for d in decoder_order] if decoder_order else sorted(
        (n for n in domains if n in config.output_modalities), key=lambda n: domains[n])
    decoder_parts = [_decoder_slots(config, name, batch[domains[name]]) for name in order]
    input_ids, labels, modality_ids, positions, valid = (torch.cat(column, dim=1) for column in zip(*decoder_parts))
    gather = _stable_partition(valid, num_decoder_tokens)
    kept_valid = torch.gather(valid, 1, gather)
    packed.update(
        decoder_input_ids=torch.gather(input_ids, 1, gather),
        decoder_modality_ids=torch.gather(modality_ids, 1, gather),
        decoder_positions=torch.gather(positions, 1, gather),
        decoder_attention_mask=kept_valid.long(),
        labels=torch.gather(labels, 1, gather).masked_fill(~kept_valid, -100),
        decoder_gather_index=gather,
    )
    for key in ("input_ids", "input_modality_ids", "input_positions", "decoder_input_ids", "decoder_modality_ids", "decoder_positions"):
        valid_key = "attention_mask" if key.startswith("input") else "decoder_attention_mask"
        packed[key] = packed[key].long().masked_fill(packed[valid_key] == 0, 0)
    return packed


def _encoder_slots(config: FourMConfig, name: str, data: dict[str, torch.Tensor]):
    """Every position of one domain as encoder candidates: ids, modality ids, positions, visible."""
    spec = config.modality(name)
    visible = ~data["input_mask"].bool()
    batch, length = visible.shape
    if spec.kind == "pixels":
        ids = torch.zeros(batch, length, dtype=torch.long)
        positions = torch.arange(length).expand(batch, -1)
    else:
        ids = data["tensor"].long()
        positions = torch.arange(length).expand(batch, -1) if spec.is_image else visible.long().cumsum(1) - 1
    modality_ids = torch.full((batch, length), config.modality_id(name))
    return ids, modality_ids, positions.clamp(min=0), visible


def _decoder_slots(config: FourMConfig, name: str, data: dict[str, torch.Tensor]):
    """Every position of one domain as decoder candidates: inputs, labels, modality ids, positions, valid."""
    spec = config.modality(name)
    is_target = ~data["target_mask"].bool()
    tokens = data["tensor"].long()
    batch, length = is_target.shape
    if spec.is_sequence:
        valid = is_target[:, :-1] & is_target[:, 1:]
        positions = is_target.long().cumsum(1)[:, :-1] - 1
        positions = positions.masked_fill(positions >= spec.max_length, 0).clamp(min=0)
        input_ids, labels = tokens[:, :-1], tokens[:, 1:]
    else:
        valid = is_target
        positions = torch.arange(length).expand(batch, -1)
        input_ids, labels = torch.zeros_like(tokens), tokens
    modality_ids = torch.full(valid.shape, config.modality_id(name))
    return input_ids, labels, modality_ids, positions, valid


# ---- command line ------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="reference weights (.safetensors)")
    parser.add_argument("--config", required=True, help="reference config.json (flat fm config)")
    parser.add_argument("--output", required=True, help="new folder for the converted model")


def main(args: argparse.Namespace) -> int:
    model = convert_ml4m_checkpoint(args.checkpoint, args.config, args.output)
    print(f"Converted {args.checkpoint} ({model.num_parameters():,} parameters) to {args.output}")
    return 0
