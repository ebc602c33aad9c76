"""Packing the generation state into the model's encoder inputs; stacking encoder outputs; the
decoder's cross-attention keys/values over them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..modeling_fourm import FourMEncoderOutput
from .schedules import is_variant, variant_base
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
    state: GenerationState,
    visible: Sequence[str],
    open_sequence: tuple[str, torch.Tensor] | None = None,
    sentinel_when_empty: bool = False,
) -> dict[str, torch.Tensor]:
    """Packed encoder batch (B, L) of the known tokens of the ``visible`` modalities.

    ``open_sequence = (name, prefix_lengths (B,))`` adds ``[S_1]`` after that sequence's given prefix
    (rows whose prefix already fills the sequence get none, and so do rows with no prefix: a sequence
    the collator gives no input budget is absent from the encoder, so that is what the model knows
    for "generate all of it"; a lone ``[S_1]`` only occurs in training when every token of a
    sequence with input budget is dropped, and it makes the model close the span early). A given
    sequence that is hidden from this view (guidance) enters as ``[S_1]`` alone, the way 4M sees a
    fully masked text. ``sentinel_when_empty``: rows with no prefix get the lone ``[S_1]`` at
    position 0 too (the reference's empty caption), and so does every empty sequence target in
    ``state.waiting_sentinels`` while earlier targets decode (the reference's dict holds it all along).
    A variant ``"<modality>#<label>"`` in ``visible`` enters as that modality with the variant's
    tokens (``state.variant_tokens``), e.g. a negative prompt as the caption.
    """
    config, batch, device = state.config, state.batch_size, state.device
    empty = torch.zeros(batch, 0, dtype=torch.long, device=device)

    def column(value):  # (B, 1) long on the state's device
        return torch.full((batch, 1), value, dtype=torch.long, device=device)

    pieces = [{"ids": empty, "modality": empty, "position": empty, "valid": empty.bool()}]
    open_name = open_sequence[0] if open_sequence is not None else None
    shown = {variant_base(name) for name in visible}
    for name in state.available():
        if name not in shown and name != open_name and config.modality(name).is_sequence:
            pieces.append({"ids": column(START_SENTINEL_ID), "modality": column(config.modality_id(name)),
                           "position": column(0), "valid": column(1).bool()})
    uses_pixels = False
    for view_name in visible:
        name = variant_base(view_name)
        spec = config.modality(name)
        if spec.kind == "pixels":
            count = config.num_positions(name)
            ids = torch.zeros(batch, count, dtype=torch.long, device=device)
            valid = torch.ones(batch, count, dtype=torch.bool, device=device)
            uses_pixels = True
        elif is_variant(view_name):
            ids, valid = state.variant_tokens[view_name], state.variant_known[view_name]
        else:
            ids, valid = state.tokens[name], state.known[name]
        positions = torch.arange(ids.shape[1], device=device).expand(batch, -1)
        pieces.append({"ids": ids, "modality": torch.full_like(ids, config.modality_id(name)), "position": positions, "valid": valid})
    for name in state.waiting_sentinels:  # empty sequence targets decoded later, under the "sentinel" start
        if name != open_name and name not in shown:
            pieces.append({"ids": column(START_SENTINEL_ID), "modality": column(config.modality_id(name)),
                           "position": column(0), "valid": column(1).bool()})
    if open_sequence is not None and open_sequence[0] in config.input_modalities:
        name, prefix_lengths = open_sequence
        marked = prefix_lengths < config.modality(name).max_length
        if not sentinel_when_empty:
            marked = marked & (prefix_lengths > 0)
        pieces.append({"ids": column(START_SENTINEL_ID), "modality": column(config.modality_id(name)),
                       "position": (prefix_lengths * marked)[:, None], "valid": marked[:, None]})
    packed = _compact(pieces)
    if uses_pixels:
        packed["pixel_values"] = state.pixel_values
    continuous = {name: state.continuous[name] for name in map(variant_base, visible) if name in state.continuous}
    if continuous:  # sequence embeddings (t5_caption): the rows their tokens index
        packed["continuous_inputs"] = continuous
    return packed


def stack_encoded(outputs: list[FourMEncoderOutput]) -> FourMEncoderOutput:
    """Encoder outputs of several views (guidance passes), each (B, L_i, D) -> one output of all their
    (sum of B) rows, padded to the longest L_i (padding: zero states and placement, attention mask 0, so
    the decoder never attends to it). The image and the sequence decoders run one decoder forward on it."""
    length = max(output.attention_mask.shape[1] for output in outputs)

    def padded(tensor):
        pad = (0, 0, 0, length - tensor.shape[1]) if tensor.dim() == 3 else (0, length - tensor.shape[1])
        return F.pad(tensor, pad)

    return FourMEncoderOutput(
        last_hidden_state=torch.cat([padded(output.last_hidden_state) for output in outputs]),
        placement=torch.cat([padded(output.placement) for output in outputs]),
        attention_mask=torch.cat([padded(output.attention_mask) for output in outputs]),
    )


def context_key_values(model, encoded: FourMEncoderOutput) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per decoder block, cross-attention (keys, values) (B, H, L, d) over ``encoded``, with the
    values of padding slots set to zero.

    A padding slot's context is ``decoder_proj_context(state) + 0``, not zero (the projection has a
    bias). Rows with real tokens never attend to padding (its bias is the dtype's minimum), so for
    them nothing changes; a row with no real token at all (an unconditional guidance view before
    anything is revealed) attends uniformly to its padding and now gets exactly 0, as the
    reference's cross-attention over zero keys does, whether the view runs alone or padded in a
    batch with longer views.
    """
    keep = encoded.attention_mask.to(encoded.last_hidden_state.dtype)[:, None, :, None]  # B, 1, L, 1
    # contiguous once here: the keys are a strided view of the fused k|v projection, which every cached step's
    # one-query attention (a batched matmul) would otherwise copy again
    return [(key.contiguous(), value * keep) for key, value in model.decoder_context_key_values(encoded)]


def target_logits(model, target: str, states: torch.Tensor) -> torch.Tensor:
    """(R, T, D) decoder states -> (R, T, V) float32 logits over the vocabulary of modality ``target``
    (its decoder embedding's output head, in the model's dtype or int8-quantised; only the output is
    cast, so sampling works on float32 probabilities); used by the image and the sequence decoders."""
    return model.decoder_embeddings[target].logits(states).float()

