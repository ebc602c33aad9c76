"""Sequence targets (captions, boxes): autoregressive decoding with a KV cache."""

from __future__ import annotations

import torch

from ..layers import KVCache
from .guidance import combine_guidance, guidance_views
from .packing import context_key_values, pack_encoder_inputs, stack_encoded, target_logits
from .sampling import Randomness, sample_tokens
from .schedules import TargetSchedule
from .special_ids import (
    END_SENTINEL_ID,
    EOS_ID,
    FIRST_SENTINEL_ID,
    NUM_SENTINELS,
    PAD_ID,
    START_SENTINEL_ID,
)
from .state import GenerationState


def next_tokens(
    ids: torch.Tensor, stop_rule: str, num_sentinels: int = NUM_SENTINELS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) sampled ids -> (what to store (B,), whether to store it (B,), whether the row stops (B,)).

    ``"fourm_hf"``: ``[EOS]`` and ``[S_2]`` stop the row and are stored as ``[EOS]``.
    ``"ml4m"``: a sentinel other than ``[S_1]`` stops the row and is not stored; a repeated ``[S_1]``
    is skipped (the reference's merge joins its spans); every other id is stored. Sentinels are
    the ``num_sentinels`` ids from ``[S_0]`` = 4 on (200 in the 4M text tokenizer).
    """
    if stop_rule == "fourm_hf":
        stops = (ids == EOS_ID) | (ids == END_SENTINEL_ID)
        return torch.where(stops, EOS_ID, ids), torch.ones_like(stops), stops
    sentinel = (ids >= FIRST_SENTINEL_ID) & (ids < FIRST_SENTINEL_ID + num_sentinels)
    stops = sentinel & (ids != START_SENTINEL_ID)
    return ids, ~sentinel, stops


def decode_sequence_target(
    model, state: GenerationState, plan: TargetSchedule, randomness: Randomness, naive=False, progress_bar=None,
    batch_guidance=True,
) -> None:
    """Autoregressive decoding of one sequence target after its given prefix; fills ``state`` in place.

    Cached: one encoder pass (all guidance views stacked, or one per view without
    ``batch_guidance``), the cross-attention keys/values computed once, a self-attention KV cache
    preallocated for the longest row and written in place, one decoder token per step. ``naive``: one encoder pass per view, then at every step the whole
    decoded prefix goes through the decoder again, per view. With ``plan.sequence_start ==
    "sentinel"`` the encoder holds ``[S_1]`` after the prefix also for an empty one. The decoder's
    positions start at 0 either way (the target is its own sequence, as both sides train it).
    When ``state.token_probs`` is a dict, each stored token's probability under the model (the softmax
    of the guided logits at temperature 1, before top-k/top-p) goes to ``state.token_probs[target]``.
    """
    config, batch, target, device = state.config, state.batch_size, plan.modality, state.device
    spec = config.modality(target)
    if target not in state.tokens:
        state.tokens[target] = torch.zeros(batch, 0, dtype=torch.long, device=device)
        state.known[target] = torch.zeros(batch, 0, dtype=torch.bool, device=device)
    prefix_lengths = state.known[target].sum(dim=1)
    if target in state.waiting_sentinels:  # from now on its [S_1] is this target's own open sentinel
        state.waiting_sentinels.remove(target)
    sentinel_start = plan.sequence_start == "sentinel"
    room = (spec.max_length - prefix_lengths).clamp(max=plan.num_tokens)
    randomness.begin_step()
    max_new = int(room.max())
    if max_new <= 0:
        if progress_bar is not None:
            progress_bar.update(plan.num_steps)
        return
    views = guidance_views(state, plan)
    encoder_batches = [pack_encoder_inputs(state, visible, (target, prefix_lengths), sentinel_start) for visible in views]
    target_id = config.modality_id(target)
    if naive:
        encoded_views = [model.encode(**b) for b in encoder_batches]
    else:  # one group of stacked views per forward; each keeps its own caches
        groups = [encoder_batches] if batch_guidance else [[b] for b in encoder_batches]
        cached_groups = []
        for group in groups:
            encoded = stack_encoded([model.encode(**b) for b in group])
            cached_groups.append((len(group), encoded, context_key_values(model, encoded), [KVCache(max_new) for _ in model.decoder]))
    history = torch.full((batch, 1), START_SENTINEL_ID, dtype=torch.long, device=device)
    generated = torch.full((batch, max_new), PAD_ID, dtype=torch.long, device=device)
    generated_probs = torch.full((batch, max_new), float("nan"), device=device) if state.token_probs is not None else None
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # tokens stored per row
    steps_taken = torch.zeros(batch, dtype=torch.long, device=device)
    finished = room <= 0
    rows = torch.arange(batch, device=device)
    for step in range(max_new):
        if progress_bar is not None:
            progress_bar.update(1)
        if naive:
            positions = torch.arange(step + 1, device=device).expand(batch, -1)
            pass_logits = []
            for encoded_view in encoded_views:
                states, _ = model.decode(encoded_view, history, torch.full_like(history, target_id), positions,
                                         context_key_values=context_key_values(model, encoded_view))
                pass_logits.append(target_logits(model, target, states[:, -1:]))
        else:
            pass_logits = []
            for group_views, encoded, key_values, kv_caches in cached_groups:
                new_input = history[:, -1:].repeat(group_views, 1)
                states, _ = model.decode(encoded, new_input, torch.full_like(new_input, target_id), torch.full_like(new_input, step),
                                         context_key_values=key_values, kv_caches=kv_caches)
                pass_logits += list(target_logits(model, target, states).split(batch))
        logits = combine_guidance(pass_logits, plan.guidance_weights[step] if plan.guidance_weights else ())
        if plan.sequence_stop == "fourm_hf":
            logits[..., PAD_ID] = float("-inf")  # [PAD] only pads; generated text never contains it
        ids, _ = sample_tokens(logits[:, 0], plan.temperatures[step], randomness.generator, plan.greedy, plan.top_k,
                               plan.top_p, plan.filter_order)
        stored, store, stops = next_tokens(ids, plan.sequence_stop, state.num_sentinels)
        active = ~finished
        write = active & store & ~(stops & (plan.sequence_stop == "ml4m"))
        generated[rows[write], lengths[write]] = stored[write]
        if generated_probs is not None:
            probs = logits[:, 0].float().softmax(dim=-1).gather(-1, ids[:, None])[:, 0]
            generated_probs[rows[write], lengths[write]] = probs[write]
        lengths += write.long()
        steps_taken += active.long()
        finished |= stops | (steps_taken >= room)
        if finished.all():
            if progress_bar is not None:
                progress_bar.update(max_new - step - 1)
            break
        history = torch.cat([history, ids[:, None]], dim=1)
    width = int((prefix_lengths + lengths).max())
    result = torch.full((batch, width), PAD_ID, dtype=torch.long, device=device)
    for row in range(batch):
        prefix, new = int(prefix_lengths[row]), int(lengths[row])
        result[row, :prefix] = state.tokens[target][row, :prefix]
        result[row, prefix:prefix + new] = generated[row, :new]
    state.tokens[target] = result
    if generated_probs is not None:
        result_probs = torch.full((batch, width), float("nan"), device=device)
        for row in range(batch):
            prefix, new = int(prefix_lengths[row]), int(lengths[row])
            result_probs[row, prefix:prefix + new] = generated_probs[row, :new]
        state.token_probs[target] = result_probs
    state.known[target] = torch.arange(width, device=device)[None] < (prefix_lengths + lengths)[:, None]
