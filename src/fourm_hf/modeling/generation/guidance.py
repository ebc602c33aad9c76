"""Guidance: which modalities each forward pass sees, and how the passes' logits combine."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .schedules import TargetSchedule, is_variant, variant_base
from .state import GenerationState


def guidance_views(state: GenerationState, plan: TargetSchedule) -> list[list[str]]:
    """Visible modalities of each forward pass: [all] without guidance, else [unconditional, cond_1, ...].

    The unconditional pass hides every modality a condition set shows (a variant
    ``"caption#negative"`` shows ``caption``); a condition's pass shows the rest plus its set, a
    variant with its own tokens (``state.variant_tokens``) at its modality's place."""
    available = state.available()
    if plan.modality in state.config.input_modalities and plan.modality in state.tokens and plan.modality not in available:
        available = [n for n in state.config.modality_names if n in available or n == plan.modality]
    if not plan.guidance_conditions:
        return [available]
    for names in plan.guidance_conditions:
        for name in names:
            if is_variant(name) and name not in state.variant_tokens:
                raise ValueError(f"guidance condition {name!r} of target {plan.modality!r} has no tokens; give them in "
                                 f"generate(variant_tokens={{{name!r}: ids}}).")
            if not is_variant(name) and name not in available:
                raise ValueError(f"guidance condition {name!r} of target {plan.modality!r} is not among the given inputs {available}.")
    conditioned = {variant_base(name) for names in plan.guidance_conditions for name in names}
    base = [name for name in available if name not in conditioned]
    views = [base]
    for names in plan.guidance_conditions:
        shown = [name for name in available if name in base or name in names]
        views.append(state.in_encoder_order(shown + [name for name in names if is_variant(name)]))
    return views


def combine_guidance(pass_logits: list[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``l_u + sum_i w_i (l_i - l_u)`` with ``pass_logits = [l_u, l_1, ..., l_K]``; no weights -> ``l_1``."""
    if not weights:
        return pass_logits[0]
    if len(pass_logits) != len(weights) + 1:
        raise ValueError(f"guidance needs {len(weights) + 1} passes (unconditional + one per condition), got {len(pass_logits)}.")
    unconditional = pass_logits[0]
    guided = unconditional.clone()
    for weight, conditional in zip(weights, pass_logits[1:]):
        guided = guided + weight * (conditional - unconditional)
    return guided
