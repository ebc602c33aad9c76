"""Reference-format batches -> FourMModel's packed batches (the reference's token selection, exactly).

The reference feeds its model one dict per domain (``tensor``, ``input_mask``, ``target_mask``;
True = NOT an input / NOT a target); :func:`reference_batch_to_packed` chooses the same encoder and
decoder tokens the reference chooses, so its stored intermediates can be compared slot by slot.
"""

from __future__ import annotations

import torch

from ..configuration_fourm import FourMConfig
from .reference_names import reference_domain_to_modality


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

    ``batch[domain]`` holds ``tensor`` ((B, N) ids, (B, C, H, W) pixels or (B, N, C) embeddings),
    ``input_mask`` and ``target_mask`` ((B, N) bool, True = NOT an input / NOT a target), keyed by reference domain
    names (``tok_rgb@224``) or modality names. Token selection follows the reference exactly: the
    encoder concatenates domains in sorted order and keeps the first ``num_encoder_tokens`` of a
    stable visible-first partition; the decoder does the same over ``decoder_order`` (default:
    sorted), a sequence domain of N slots contributing N - 1 next-token targets.

    Continuous inputs go to ``pixel_values`` (the model's only pixels modality) or to
    ``continuous_inputs`` (by modality name). Returns the packed tensors plus ``encoder_gather_index``
    / ``decoder_gather_index`` (B, budget): each kept slot's index in the respective concatenation.
    """
    domains = {reference_domain_to_modality(d, config.image_size): d for d in batch}
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
    continuous = {n: batch[domains[n]]["tensor"].float() for n in domains
                  if n in config.input_modalities and config.modality(n).is_continuous}
    pixel_names = [n for n in continuous if config.modality(n).kind == "pixels"]
    if len(pixel_names) == 1:
        packed["pixel_values"] = continuous.pop(pixel_names[0])
    if continuous:
        packed["continuous_inputs"] = continuous
    order = [reference_domain_to_modality(d, config.image_size) for d in decoder_order] if decoder_order else sorted(
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
    slots = torch.arange(length).expand(batch, -1)
    if spec.kind == "pixels":
        ids = torch.zeros(batch, length, dtype=torch.long)
    elif spec.kind == "sequence_embedding":
        ids = slots  # the row of the embedding each token reads
    else:
        ids = data["tensor"].long()
    positions = slots if spec.is_image else visible.long().cumsum(1) - 1
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
        positions = positions.masked_fill(positions >= spec.decoder_position_limit, 0).clamp(min=0)
        input_ids, labels = tokens[:, :-1], tokens[:, 1:]
    else:
        valid = is_target
        positions = torch.arange(length).expand(batch, -1)
        input_ids, labels = torch.zeros_like(tokens), tokens
    modality_ids = torch.full(valid.shape, config.modality_id(name))
    return input_ids, labels, modality_ids, positions, valid
