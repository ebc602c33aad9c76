"""Packing the generation state into the model's encoder inputs (and stacking encoder outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..modeling_fourm import FourMEncoderOutput
from .special_ids import START_SENTINEL_ID
from .state import GenerationState


def _compact(pieces: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-modality (B, n) pieces and move each row's real tokens to the front."""
    ids, modality_ids, positions, valid = (torch.cat([p[key] for p in pieces], dim=1) for key in ("ids", "modality", "position", "valid"))
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    length = max(int(valid.sum(dim=1).max()), 1)
    order = order[:, :length]
    valid = valid.gather(1, order)
    keep = lambda t: t.gather(1, order) * valid  # noqa: E731  (padding slots hold zeros)
    return {"input_ids": keep(ids), "input_modality_ids": keep(modality_ids), "input_positions": keep(positions),
            "attention_mask": valid.long()}


def pack_encoder_inputs(
    state: GenerationState, visible: Sequence[str], open_sequence: tuple[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Packed encoder batch (B, L) of the known tokens of the ``visible`` modalities.

    ``open_sequence = (name, prefix_lengths (B,))`` adds ``[S_1]`` after that sequence's given prefix
    (rows whose prefix already fills the sequence get none, and so do rows with no prefix: a sequence
    the collator gives no input budget is absent from the encoder, so that is what the model knows
    for "generate all of it"; a lone ``[S_1]`` only occurs in training when every token of a
    sequence with input budget is dropped, and it makes the model close the span early). A given
    sequence that is hidden from this view (guidance) enters as ``[S_1]`` alone, the way 4M sees a
    fully masked text.
    """
    config, batch = state.config, state.batch_size
    empty = torch.zeros(batch, 0, dtype=torch.long)
    pieces = [{"ids": empty, "modality": empty, "position": empty, "valid": empty.bool()}]
    open_name = open_sequence[0] if open_sequence is not None else None
    for name in state.available():
        if name not in visible and name != open_name and config.modality(name).is_sequence:
            pieces.append({"ids": torch.full((batch, 1), START_SENTINEL_ID), "modality": torch.full((batch, 1), config.modality_id(name)),
                           "position": torch.zeros(batch, 1, dtype=torch.long), "valid": torch.ones(batch, 1, dtype=torch.bool)})
    uses_pixels = False
    for name in visible:
        spec = config.modality(name)
        if spec.kind == "pixels":
            count = config.grid_size**2
            ids, valid = torch.zeros(batch, count, dtype=torch.long), torch.ones(batch, count, dtype=torch.bool)
            uses_pixels = True
        else:
            ids, valid = state.tokens[name], state.known[name]
        positions = torch.arange(ids.shape[1]).expand(batch, -1)
        pieces.append({"ids": ids, "modality": torch.full_like(ids, config.modality_id(name)), "position": positions, "valid": valid})
    if open_sequence is not None and open_sequence[0] in config.input_modalities:
        name, prefix_lengths = open_sequence
        marked = (prefix_lengths > 0) & (prefix_lengths < config.modality(name).max_length)
        pieces.append({"ids": torch.full((batch, 1), START_SENTINEL_ID), "modality": torch.full((batch, 1), config.modality_id(name)),
                       "position": (prefix_lengths * marked)[:, None], "valid": marked[:, None]})
    packed = _compact(pieces)
    if uses_pixels:
        packed["pixel_values"] = state.pixel_values
    return packed


def _stack_encoded(outputs: list[FourMEncoderOutput]) -> FourMEncoderOutput:
    """Encoder outputs of several views (B, L_i, D) -> one of all their rows, padded to the longest
    (padding: zero states and placement, attention mask 0, so the decoder never attends to it)."""
    length = max(output.attention_mask.shape[1] for output in outputs)

    def padded(tensor):
        pad = (0, 0, 0, length - tensor.shape[1]) if tensor.dim() == 3 else (0, length - tensor.shape[1])
        return F.pad(tensor, pad)

    return FourMEncoderOutput(
        last_hidden_state=torch.cat([padded(output.last_hidden_state) for output in outputs]),
        placement=torch.cat([padded(output.placement) for output in outputs]),
        attention_mask=torch.cat([padded(output.attention_mask) for output in outputs]),
    )
