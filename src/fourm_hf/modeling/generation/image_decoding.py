"""Image-token targets: MaskGIT (keep the most confident predictions) and ROAR (a random order)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .guidance import combine_guidance, guidance_views
from .packing import _stack_encoded, pack_encoder_inputs
from .sampling import sample_tokens
from .schedules import TargetSchedule, reveal_counts
from .state import GenerationState


def _logits_head(model, target: str, states: torch.Tensor) -> torch.Tensor:
    """(R, T, D) decoder states -> (R, T, V) float32 logits of ``target``."""
    return F.linear(states, model.decoder_embeddings[target].logits_weight).float()


# ---- image targets: MaskGIT and ROAR ------------------------------------------------------------------
def image_target_logits(
    model,
    state: GenerationState,
    target: str,
    query_positions: torch.Tensor,
    query_mask: torch.Tensor,
    views: list[list[str]],
    naive: bool = False,
) -> list[torch.Tensor]:
    """Logits (B, Q, V) of the queried grid positions of ``target``, one tensor per view of the inputs.

    Each view is encoded at its own length (an unconditional view holds far fewer tokens than the
    conditional one, so padding it to the same length would only add work); the decoder then runs
    once over all views' rows, or (``naive``) once per view.
    """
    batch = state.batch_size
    target_id = state.config.modality_id(target)
    encoded_views = [model.encode(**pack_encoder_inputs(state, visible)) for visible in views]

    def run(encoded, rows):
        positions = query_positions.repeat(rows // batch, 1)
        mask = query_mask.long().repeat(rows // batch, 1)
        states, _ = model.decode(encoded, torch.zeros_like(positions), torch.full_like(positions, target_id), positions, mask)
        return _logits_head(model, target, states)

    if naive or len(encoded_views) == 1:
        return [run(encoded, batch) for encoded in encoded_views]
    return list(run(_stack_encoded(encoded_views), batch * len(views)).split(batch))


def _rows_to_front(selected: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool selection -> per row the selected ``values`` first (B, Q) and their mask (B, Q)."""
    order = torch.sort((~selected).to(torch.int8), dim=1, stable=True).indices
    width = max(int(selected.sum(dim=1).max()), 1)
    order = order[:, :width]
    return values.gather(1, order), selected.gather(1, order)


def decode_image_target(
    model, state: GenerationState, plan: TargetSchedule, generator, naive=False, progress_bar=None, batch_guidance=True
) -> None:
    """MaskGIT or ROAR decoding of one image-token target; fills ``state`` in place.

    Guidance views run as one stacked forward, or one forward each (``naive`` or not ``batch_guidance``).
    """
    config, batch, target = state.config, state.batch_size, plan.modality
    count = config.grid_size**2
    if target not in state.tokens:
        state.tokens[target] = torch.zeros(batch, count, dtype=torch.long)
        state.known[target] = torch.zeros(batch, count, dtype=torch.bool)
    tokens, known = state.tokens[target], state.known[target]
    to_generate = (~known).sum(dim=1).clamp(max=plan.num_tokens)
    counts = torch.tensor([reveal_counts(int(n), plan.num_steps, plan.token_schedule) for n in to_generate])
    if plan.scheme == "roar":
        keys = torch.rand(batch, count, generator=generator).masked_fill(known, 2.0)
        random_order = keys.argsort(dim=1)  # unknown positions first, in random order
        decoded = torch.zeros(batch, dtype=torch.long)
    for step in range(plan.num_steps):
        if progress_bar is not None:
            progress_bar.update(1)
        step_counts = counts[:, step]
        if not step_counts.any():
            continue
        if plan.scheme == "maskgit":
            query_positions, query_mask = _rows_to_front(~known, torch.arange(count).expand(batch, -1))
        else:
            width = int(step_counts.max())
            offsets = (decoded[:, None] + torch.arange(width)).clamp(max=count - 1)
            query_positions = random_order.gather(1, offsets)
            query_mask = torch.arange(width)[None] < step_counts[:, None]
            decoded += step_counts
        views = guidance_views(state, plan)
        pass_logits = image_target_logits(model, state, target, query_positions, query_mask, views, naive or not batch_guidance)
        logits = combine_guidance(pass_logits, plan.guidance_weights[step] if plan.guidance_weights else ())
        width = query_positions.shape[1]
        ids, confidence = sample_tokens(logits.reshape(batch * width, -1), plan.temperatures[step], generator,
                                        plan.greedy, plan.top_k, plan.top_p)
        ids, confidence = ids.view(batch, width), confidence.view(batch, width)
        if plan.scheme == "maskgit":
            confidence = confidence.masked_fill(~query_mask, -1.0)
            rank = confidence.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
            reveal = query_mask & (rank < step_counts[:, None])
        else:
            reveal = query_mask
        rows, slots = reveal.nonzero(as_tuple=True)
        tokens[rows, query_positions[rows, slots]] = ids[rows, slots]
        known[rows, query_positions[rows, slots]] = True
