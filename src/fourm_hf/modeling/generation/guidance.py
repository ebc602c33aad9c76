"""Guidance: which modalities each forward pass sees, and how the passes' logits combine."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .schedules import TargetSchedule
from .state import GenerationState


def guidance_views(state: GenerationState, plan: TargetSchedule) -> list[list[str]]:
    """Visible modalities of each forward pass: [all] without guidance, else [unconditional, cond_1, ...]."""
    available = state.available()
    if plan.modality in state.config.input_modalities and plan.modality in state.tokens and plan.modality not in available:
        available = [n for n in state.config.modality_names if n in available or n == plan.modality]
    if not plan.guidance_conditions:
        return [available]
    for names in plan.guidance_conditions:
        for name in names:
            if name not in available:
                raise ValueError(f"guidance condition {name!r} of target {plan.modality!r} is not among the given inputs {available}.")
    conditioned = {name for names in plan.guidance_conditions for name in names}
    base = [name for name in available if name not in conditioned]
    return [base] + [[name for name in available if name in base or name in names] for names in plan.guidance_conditions]


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
