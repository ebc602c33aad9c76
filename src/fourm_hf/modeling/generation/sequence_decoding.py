"""Sequence targets (captions, boxes): autoregressive decoding with a KV cache."""

from __future__ import annotations

import torch

from ..layers import KVCache
from .guidance import combine_guidance, guidance_views
from .image_decoding import _logits_head
from .packing import _stack_encoded, pack_encoder_inputs
from .sampling import sample_tokens
from .schedules import TargetSchedule
from .special_ids import END_SENTINEL_ID, EOS_ID, PAD_ID, START_SENTINEL_ID
from .state import GenerationState


def decode_sequence_target(
    model, state: GenerationState, plan: TargetSchedule, generator, naive=False, progress_bar=None, batch_guidance=True
) -> None:
    """Autoregressive decoding of one sequence target after its given prefix; fills ``state`` in place.

    Cached: one encoder pass (all guidance views stacked, or one per view without
    ``batch_guidance``), the cross-attention keys/values computed once, a self-attention KV cache,
    one decoder token per step. ``naive``: one encoder pass per view, then at every step the whole
    decoded prefix goes through the decoder again, per view.
    """
    config, batch, target = state.config, state.batch_size, plan.modality
    spec = config.modality(target)
    if target not in state.tokens:
        state.tokens[target] = torch.zeros(batch, 0, dtype=torch.long)
        state.known[target] = torch.zeros(batch, 0, dtype=torch.bool)
    prefix_lengths = state.known[target].sum(dim=1)
    room = (spec.max_length - prefix_lengths).clamp(max=plan.num_tokens)
    max_new = int(room.max())
    if max_new <= 0:
        if progress_bar is not None:
            progress_bar.update(plan.num_steps)
        return
    views = guidance_views(state, plan)
    encoder_batches = [pack_encoder_inputs(state, visible, (target, prefix_lengths)) for visible in views]
    target_id = config.modality_id(target)
    if naive:
        encoded_views = [model.encode(**b) for b in encoder_batches]
    else:  # one group of stacked views per forward; each keeps its own caches
        groups = [encoder_batches] if batch_guidance else [[b] for b in encoder_batches]
        cached_groups = []
        for group in groups:
            encoded = _stack_encoded([model.encode(**b) for b in group])
            cached_groups.append((len(group), encoded, model.decoder_context_key_values(encoded), [KVCache() for _ in model.decoder]))
    history = torch.full((batch, 1), START_SENTINEL_ID)
    generated = torch.full((batch, max_new), PAD_ID)
    lengths = torch.zeros(batch, dtype=torch.long)
    finished = room <= 0
    for step in range(max_new):
        if progress_bar is not None:
            progress_bar.update(1)
        if naive:
            positions = torch.arange(step + 1).expand(batch, -1)
            pass_logits = []
            for encoded_view in encoded_views:
                states, _ = model.decode(encoded_view, history, torch.full_like(history, target_id), positions)
                pass_logits.append(_logits_head(model, target, states[:, -1:]))
        else:
            pass_logits = []
            for group_views, encoded, context_key_values, kv_caches in cached_groups:
                new_input = history[:, -1:].repeat(group_views, 1)
                states, _ = model.decode(encoded, new_input, torch.full_like(new_input, target_id), torch.full_like(new_input, step),
                                         context_key_values=context_key_values, kv_caches=kv_caches)
                pass_logits += list(_logits_head(model, target, states).split(batch))
        logits = combine_guidance(pass_logits, plan.guidance_weights[step] if plan.guidance_weights else ())
        logits[..., PAD_ID] = float("-inf")  # [PAD] only pads; generated text never contains it
        ids, _ = sample_tokens(logits[:, 0], plan.temperatures[step], generator, plan.greedy, plan.top_k, plan.top_p)
        active = ~finished
        stops = (ids == EOS_ID) | (ids == END_SENTINEL_ID)
        generated[active, step] = torch.where(stops, EOS_ID, ids)[active]
        lengths += active.long()
        finished |= stops | (lengths >= room)
        if finished.all():
            if progress_bar is not None:
                progress_bar.update(max_new - step - 1)
            break
        history = torch.cat([history, ids[:, None]], dim=1)
    width = int((prefix_lengths + lengths).max())
    result = torch.full((batch, width), PAD_ID)
    for row in range(batch):
        prefix, new = int(prefix_lengths[row]), int(lengths[row])
        result[row, :prefix] = state.tokens[target][row, :prefix]
        result[row, prefix:prefix + new] = generated[row, :new]
    state.tokens[target] = result
    state.known[target] = torch.arange(width)[None] < (prefix_lengths + lengths)[:, None]
