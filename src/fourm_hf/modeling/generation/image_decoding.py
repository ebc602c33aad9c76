"""Image-token targets: MaskGIT (keep the most confident predictions) and ROAR (a random order)."""

from __future__ import annotations

import torch

from .guidance import combine_guidance, guidance_views
from .packing import context_key_values, pack_encoder_inputs, stack_encoded, target_logits
from .sampling import Randomness, sample_tokens
from .schedules import TargetSchedule, reveal_counts
from .state import GenerationState


# ---- the decoder over the queried positions ---------------------------------------------------------
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
    once over all views' rows, or (``naive``) once per view. Padding slots carry zero cross-attention
    values (:func:`~.packing.context_key_values`), so both give the same logits.
    """
    batch = state.batch_size
    target_id = state.config.modality_id(target)
    encoded_views = [model.encode(**pack_encoder_inputs(state, visible)) for visible in views]

    def run(encoded, rows):
        positions = query_positions.repeat(rows // batch, 1)
        mask = query_mask.long().repeat(rows // batch, 1)
        states, _ = model.decode(encoded, torch.zeros_like(positions), torch.full_like(positions, target_id), positions,
                                 mask, context_key_values=context_key_values(model, encoded))
        return target_logits(model, target, states)

    if naive or len(encoded_views) == 1:
        return [run(encoded, batch) for encoded in encoded_views]
    return list(run(stack_encoded(encoded_views), batch * len(views)).split(batch))


def _rows_to_front(selected: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool selection -> per row the selected ``values`` first (B, Q) and their mask (B, Q)."""
    order = torch.sort((~selected).to(torch.int8), dim=1, stable=True).indices
    width = max(int(selected.sum(dim=1).max()), 1)
    order = order[:, :width]
    return values.gather(1, order), selected.gather(1, order)


# ---- which positions a step decodes and which it keeps ----------------------------------------------
def ml4m_roar_positions(known: torch.Tensor, step_counts: torch.Tensor, randomness: Randomness):
    """The reference's ROAR step: random keys r (N,) shared by the batch, drawn now; the unknown
    positions ranked by ``known + 1e-6 r`` (unknown first), the first ``k`` of each row.
    Returns query positions (B, Q) and their mask (B, Q)."""
    count = known.shape[1]
    keys = known.float() + 1e-6 * randomness.rand(count, device=known.device)[None]
    ranked = keys.argsort(dim=1)
    width = int(step_counts.max())
    unknown = (~known).sum(dim=1, keepdim=True)
    slots = torch.arange(width, device=known.device)[None]
    return ranked[:, :width], (slots < step_counts[:, None]) & (slots < unknown)


def maskgit_keep(confidence: torch.Tensor, query_mask: torch.Tensor, step_counts: torch.Tensor, rule: str) -> torch.Tensor:
    """(B, Q) confidences of the queried positions -> (B, Q) bool, the ``step_counts`` kept per row.

    ``"confidence"``: the most confident (stable order among equals); ``"ml4m"``: ``torch.topk`` over
    the row's queried positions, as the reference selects (at temperature 0 all confidences are 1,
    so the kept positions are topk's tie order).
    """
    if rule == "confidence":
        confidence = confidence.masked_fill(~query_mask, -1.0)
        rank = confidence.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        return query_mask & (rank < step_counts[:, None])
    keep = torch.zeros_like(query_mask)
    widths = query_mask.sum(dim=1)
    uniform = bool((widths == widths[0]).all() and (step_counts == step_counts[0]).all())
    if uniform:  # one batched topk, exactly the reference's call
        width, k = int(widths[0]), int(step_counts[0])
        chosen = confidence[:, :width].topk(k, dim=-1).indices
        return keep.scatter(1, chosen, True)
    for row in range(confidence.shape[0]):
        width, k = int(widths[row]), int(step_counts[row])
        keep[row, confidence[row, :width].topk(k).indices] = True
    return keep


# ---- one image target ------------------------------------------------------------------------------
def decode_image_target(
    model, state: GenerationState, plan: TargetSchedule, randomness: Randomness, naive=False, progress_bar=None,
    batch_guidance=True,
) -> None:
    """MaskGIT or ROAR decoding of one image-token target; fills ``state`` in place.

    Guidance views run as one stacked forward, or one forward each (``naive`` or not ``batch_guidance``).
    """
    config, batch, target, device = state.config, state.batch_size, plan.modality, state.device
    count = config.num_positions(target)
    if target not in state.tokens:
        state.tokens[target] = torch.zeros(batch, count, dtype=torch.long, device=device)
        state.known[target] = torch.zeros(batch, count, dtype=torch.bool, device=device)
    tokens, known = state.tokens[target], state.known[target]
    to_generate = (~known).sum(dim=1).clamp(max=plan.num_tokens).tolist()
    counts = torch.tensor([reveal_counts(int(n), plan.num_steps, plan.token_schedule) for n in to_generate], device=device)
    positions = torch.arange(count, device=device).expand(batch, -1)
    fixed_order = plan.scheme == "roar" and plan.roar_order == "fixed"
    for step in range(plan.num_steps):
        if progress_bar is not None:
            progress_bar.update(1)
        generator = randomness.begin_step()
        if fixed_order and step == 0:
            keys = randomness.rand(batch, count, device=device).masked_fill(known, 2.0)
            random_order = keys.argsort(dim=1)  # unknown positions first, in random order
            decoded = torch.zeros(batch, dtype=torch.long, device=device)
        step_counts = counts[:, step]
        if not step_counts.any():
            continue
        if plan.scheme == "maskgit":
            query_positions, query_mask = _rows_to_front(~known, positions)
        elif fixed_order:
            width = int(step_counts.max())
            offsets = (decoded[:, None] + torch.arange(width, device=device)).clamp(max=count - 1)
            query_positions = random_order.gather(1, offsets)
            query_mask = torch.arange(width, device=device)[None] < step_counts[:, None]
            decoded += step_counts
        else:
            query_positions, query_mask = ml4m_roar_positions(known, step_counts, randomness)
        views = guidance_views(state, plan)
        pass_logits = image_target_logits(model, state, target, query_positions, query_mask, views, naive or not batch_guidance)
        logits = combine_guidance(pass_logits, plan.guidance_weights[step] if plan.guidance_weights else ())
        width = query_positions.shape[1]
        ids, confidence = sample_tokens(
            logits.reshape(batch * width, -1), plan.temperatures[step], generator, plan.greedy, plan.top_k, plan.top_p,
            plan.filter_order, "one" if plan.reveal_rule == "ml4m" else "probability",
        )
        ids, confidence = ids.view(batch, width), confidence.view(batch, width)
        reveal = maskgit_keep(confidence, query_mask, step_counts, plan.reveal_rule) if plan.scheme == "maskgit" else query_mask
        rows, slots = reveal.nonzero(as_tuple=True)
        tokens[rows, query_positions[rows, slots]] = ids[rows, slots]
        known[rows, query_positions[rows, slots]] = True
